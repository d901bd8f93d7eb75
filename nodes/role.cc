#include "nodes/role.h"

namespace tally {

std::optional<std::string> NodeRole::RosterProblem(const PhaseUpdate& u) const {
  auto check = [&](const std::string& name, Role role) -> std::optional<std::string> {
    const Certificate* c = roster_.Find(name);
    if (c == nullptr) return name + " is not in " + name_ + "'s roster";
    if (c->role != role)
      return name + " is not a " + std::string(RoleName(role)) + " in " + name_ + "'s roster";
    return std::nullopt;
  };
  if (auto problem = check(u.params.hospital, Role::kHospital)) return problem;
  for (const std::string& p : u.params.participants)
    if (auto problem = check(p, Role::kPatient)) return problem;
  return std::nullopt;
}

std::optional<std::string> LaterUpdateProblem(const PhaseUpdate& opened, const RoundSets& seen,
                                              const PhaseUpdate& u) {
  if (u.round != opened.round || u.params != opened.params)
    return "the " + std::string(PhaseName(u.phase)) + " phase is not the round as opened";
  if (Status sets = CheckSets(u); !sets.ok()) return sets.message();
  const std::pair<const Members*, const Members*> fixed[] = {{&seen.joined, &u.sets.joined},
                                                             {&seen.shared, &u.sets.shared},
                                                             {&seen.masked, &u.sets.masked},
                                                             {&seen.confirmed, &u.sets.confirmed}};
  for (const auto& [before, now] : fixed)
    if (!before->empty() && *before != *now) return "the broker changed a set of the round";
  return std::nullopt;
}

}  // namespace tally

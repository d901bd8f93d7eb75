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

bool IsSumOf(const PhaseUpdate& opened, const PhaseUpdate& u) {
  return u.round == opened.round && u.params == opened.params &&
         u.nonces.size() == u.params.participants.size();
}

}  // namespace tally

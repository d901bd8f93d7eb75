// Internal to tally_nodes: what the patient and the hospital roles share.
// Thread-compatible: driven by Node::Run's thread.
#pragma once

#include <chrono>
#include <optional>
#include <string>
#include <string_view>

#include "keys/keys.h"
#include "nodes/link.h"
#include "nodes/seal.h"
#include "schema/log.h"
#include "schema/schema.h"
#include "schema/status.h"

namespace tally {

class NodeRole : public LinkHandler {
 public:
  // Called after every Link::Poll, with the time: the role's own deadlines.
  virtual void Tick(Clock::time_point now) = 0;
  // Set once the node is done: ok, or why it gives up. The first outcome stands.
  const std::optional<Status>& outcome() const { return outcome_; }

 protected:
  NodeRole(std::string name, const Roster& roster, const Sealer& sealer, Link& link, LogSink log)
      : name_(std::move(name)),
        roster_(roster),
        sealer_(sealer),
        link_(link),
        log_(std::move(log)) {}
  void Log(const std::string& fields) const {
    if (log_) log_("node " + name_ + " " + fields);
  }
  void Finish(Status status) {
    if (!outcome_) outcome_ = std::move(status);
  }
  // Why this party cannot take part in the round `u` as its own roster sees it ("bob is not in
  // alice's roster", "clinic is not a hospital in alice's roster"), or nullopt: every party of
  // the round must be in the roster in its role, or this party could not mask with it, seal to
  // it, or trust that it is who the broker says.
  std::optional<std::string> RosterProblem(const PhaseUpdate& u) const;

  const std::string name_;
  const Roster& roster_;
  const Sealer& sealer_;
  Link& link_;

 private:
  LogSink log_;
  std::optional<Status> outcome_;
};

// Why `u` is not a later update of the round `opened` as far as `seen` (the sets of the updates
// acted on so far), or nullopt: the broker may not change a round's parameters once it is open,
// nor a set once it is fixed, and the sets must be what the phase has (CheckSets).
std::optional<std::string> LaterUpdateProblem(const PhaseUpdate& opened, const RoundSets& seen,
                                              const PhaseUpdate& u);

}  // namespace tally

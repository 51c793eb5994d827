// Placement policy. The dispatcher hands the scheduler a run of ready tokens
// of one lane and the nodes that could take them; the scheduler says which
// node (and which lane) each token goes to. Policies: round-robin,
// least-outstanding-work (default) and the learned cost model
// (coordinator/costmodel plugs in through `costs`).
// Called on the coordinator loop thread only.
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "common/job.h"

namespace tokengate::coordinator {

struct TokenInfo {
  uint64_t id = 0;
  uint32_t op = 0;  // coordinator op index
  Weight declared = Weight::kLight;
  uint32_t arg_count = 0;
  uint32_t arg_bytes = 0;
  double first_arg = 0;  // first numeric argument (NaN if none)
  double cost = 1;       // predicted cost (filled from Scheduler::costs)
};

struct Candidate {
  uint32_t node = 0;          // node slot
  uint32_t free_credit = 0;   // tokens the lane may still take
  uint32_t workers = 1;       // lane workers on that node
  double outstanding = 0;     // predicted work in flight (cost units)
  uint64_t in_flight = 0;     // tokens in flight on the lane
  double speed = 1.0;         // observed relative speed (1 = nominal, <1 slower)
  uint32_t assigned = 0;      // tokens given this round (scheduler updates)
};

struct Placement {
  int32_t candidate = -1;  // index into candidates, -1 = hold back
  Weight lane = Weight::kLight;
};

class Scheduler {
 public:
  virtual ~Scheduler() = default;
  virtual const char* name() const = 0;
  // Places tokens of `lane`. Must respect free_credit, and update
  // free_credit/outstanding/assigned of the chosen candidates.
  virtual void place(Weight lane, std::span<const TokenInfo> tokens,
                     std::span<Candidate> candidates, std::span<Placement> out) = 0;
  // Predicted cost of a token in cost units (ns for learned models); used to
  // account outstanding work. Default 1 per token.
  virtual void costs(std::span<const TokenInfo> tokens, std::span<double> out);
  // Observed completion (feeds adaptive policies). Default: nothing.
  virtual void observe(const TokenInfo& token, uint32_t node, double run_ns) {}
};

std::unique_ptr<Scheduler> makeRoundRobinScheduler();
std::unique_ptr<Scheduler> makeLeastOutstandingScheduler();
std::unique_ptr<Scheduler> makeScheduler(const std::string& name);  // "round-robin", "least-outstanding"

}  // namespace tokengate::coordinator

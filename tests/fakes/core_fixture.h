// The base of the CoordinatorCore unit tests (coordinator_test, run_timeout_test, verify_test):
// a core on a FakeClock and a MemoryOutbox, fake nodes that say hello, and reads of node states
// and metrics. Each test's fixture adds its own jobs and rounds.
#pragma once

#include <gtest/gtest.h>
#include <prometheus/registry.h>

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include "coordinator/core/coordinator.h"
#include "tests/fakes/fake_clock.h"
#include "tests/fakes/memory_outbox.h"

namespace tokengate::testing {

class CoreTestBase : public ::testing::Test {
 protected:
  // (Re)creates the core from config_ (tests change config_ first), with a fresh registry.
  void make() {
    core_.reset();
    registry_ = std::make_shared<prometheus::Registry>();
    core_ = std::make_unique<coordinator::CoordinatorCore>(config_, clock_, outbox_, registry_);
  }
  // A node offering `ops` that has said hello (a test failure if it was refused).
  std::unique_ptr<FakeNode> addNode(const std::string& id,
                                    std::vector<std::pair<std::string, Weight>> ops,
                                    uint32_t workers = 1, bool deterministic = true) {
    auto n = std::make_unique<FakeNode>(*core_, outbox_, id, std::move(ops), workers);
    n->deterministic = deterministic;
    EXPECT_TRUE(n->hello());
    return n;
  }
  // The state of the live registration of `id` (kDead when there is none).
  control::NodeState stateOf(const std::string& id) {
    for (const auto& n : core_->listNodes())
      if (n.id == id && n.state != control::NodeState::kDead) return n.state;
    return control::NodeState::kDead;
  }
  // The value of metric `name` (the first series with label == value, or the first series
  // when no label is given); -1 when there is none.
  double metric(const std::string& name, const std::string& label = {},
                const std::string& value = {}) {
    for (const auto& fam : registry_->Collect()) {
      if (fam.name != name) continue;
      for (const auto& m : fam.metric) {
        bool match = label.empty();
        for (const auto& l : m.label) match |= l.name == label && l.value == value;
        if (match)
          return fam.type == prometheus::MetricType::Counter ? m.counter.value : m.gauge.value;
      }
    }
    return -1;
  }

  coordinator::CoordinatorConfig config_;
  FakeClock clock_;
  MemoryOutbox outbox_;
  std::shared_ptr<prometheus::Registry> registry_;
  std::unique_ptr<coordinator::CoordinatorCore> core_;
};

}  // namespace tokengate::testing

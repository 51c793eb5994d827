#include "coordinator/costmodel/balance_sim.h"

#include <algorithm>
#include <deque>
#include <queue>

#include "coordinator/costmodel/placement.h"
#include "coordinator/costmodel/quality.h"

namespace tokengate::costmodel {

std::string_view simPolicyName(SimPolicy p) {
  switch (p) {
    case SimPolicy::kRoundRobin:
      return "round-robin";
    case SimPolicy::kLeastOutstanding:
      return "least-outstanding";
    case SimPolicy::kModel:
      return "xgboost";
  }
  return "unknown";
}

namespace {

struct NodeSim {
  std::deque<std::pair<size_t, double>> queue;  // (token, actual run ns)
  uint32_t running = 0;
  uint32_t in_flight = 0;  // queued + running
  double predicted_outstanding = 0;
};

struct Event {
  double time;
  size_t node;
  size_t token;
  bool operator>(const Event& o) const {
    return time != o.time ? time > o.time : token > o.token;  // deterministic tie-break
  }
};

}  // namespace

SimResult simulateBalance(SimPolicy policy, std::span<const TokenFeatures> tokens,
                          std::span<const SimNode> nodes,
                          const std::function<double(const TokenFeatures&)>& true_cost_ns,
                          const CostModel* model, size_t lookahead) {
  SimResult result;
  result.tokens_per_node.assign(nodes.size(), 0);
  if (tokens.empty() || nodes.empty() || (policy == SimPolicy::kModel && !model)) return result;

  std::vector<NodeSim> sim(nodes.size());
  std::vector<double> predicted(tokens.size(), 0);
  std::vector<double> completion(tokens.size(), 0);
  std::priority_queue<Event, std::vector<Event>, std::greater<>> events;
  std::deque<size_t> pending;  // submission order; held-back tokens stay here
  for (size_t i = 0; i < tokens.size(); ++i) pending.push_back(i);
  size_t rr_cursor = 0;
  double now = 0;

  auto startWork = [&](size_t j) {
    NodeSim& n = sim[j];
    while (n.running < std::max<uint32_t>(nodes[j].workers, 1) && !n.queue.empty()) {
      auto [tok, run_ns] = n.queue.front();
      n.queue.pop_front();
      ++n.running;
      events.push(Event{now + run_ns, j, tok});
    }
  };
  auto assign = [&](size_t tok, size_t j, double predicted_ns) {
    TokenFeatures f = tokens[tok];
    f.node_index = static_cast<uint32_t>(j);
    f.node_speed = nodes[j].speed_factor;
    f.node_load = sim[j].in_flight;
    sim[j].queue.emplace_back(tok, std::max(true_cost_ns(f), 0.0));
    ++sim[j].in_flight;
    predicted[tok] = predicted_ns;
    sim[j].predicted_outstanding += predicted_ns;
    ++result.tokens_per_node[j];
    startWork(j);
  };
  auto freeCredit = [&](size_t j) {
    const uint32_t credit = std::max<uint32_t>(nodes[j].credit, 1);
    return sim[j].in_flight < credit ? credit - sim[j].in_flight : 0u;
  };
  auto dispatch = [&] {
    size_t total_free = 0;
    for (size_t j = 0; j < nodes.size(); ++j) total_free += freeCredit(j);
    if (total_free == 0 || pending.empty()) return;
    if (policy == SimPolicy::kRoundRobin) {
      while (!pending.empty()) {
        size_t tried = 0;
        while (tried < nodes.size() && freeCredit(rr_cursor) == 0) {
          rr_cursor = (rr_cursor + 1) % nodes.size();
          ++tried;
        }
        if (tried == nodes.size()) break;
        assign(pending.front(), rr_cursor, 1);
        pending.pop_front();
        rr_cursor = (rr_cursor + 1) % nodes.size();
      }
    } else if (policy == SimPolicy::kLeastOutstanding) {
      while (!pending.empty()) {
        std::optional<size_t> best;
        for (size_t j = 0; j < nodes.size(); ++j) {
          if (freeCredit(j) == 0) continue;
          if (!best || sim[j].in_flight < sim[*best].in_flight) best = j;
        }
        if (!best) break;
        assign(pending.front(), *best, 1);
        pending.pop_front();
      }
    } else {
      // The release window: the first `lookahead` pending tokens (at least the free credit).
      const size_t m = std::min(std::max(total_free, lookahead), pending.size());
      std::vector<TokenFeatures> window;
      window.reserve(m);
      for (size_t i = 0; i < m; ++i) window.push_back(tokens[pending[i]]);
      std::vector<NodeView> views(nodes.size());
      for (size_t j = 0; j < nodes.size(); ++j) {
        views[j].node_index = static_cast<uint32_t>(j);
        views[j].speed_factor = nodes[j].speed_factor;
        views[j].load = sim[j].in_flight;
        views[j].outstanding_ns = sim[j].predicted_outstanding;
        views[j].workers = nodes[j].workers;
        views[j].capacity = freeCredit(j);
      }
      const auto placed = placeBatch(*model, window, views);
      std::deque<size_t> held;
      for (size_t i = 0; i < m; ++i) {
        if (placed[i].node == Placement::kHoldBack) {
          held.push_back(pending[i]);
        } else {
          assign(pending[i], placed[i].node, placed[i].predicted_ns);
        }
      }
      pending.erase(pending.begin(), pending.begin() + static_cast<ptrdiff_t>(m));
      pending.insert(pending.begin(), held.begin(), held.end());
    }
  };

  dispatch();
  while (!events.empty()) {
    const Event e = events.top();
    events.pop();
    now = e.time;
    NodeSim& n = sim[e.node];
    --n.running;
    --n.in_flight;
    n.predicted_outstanding = std::max(0.0, n.predicted_outstanding - predicted[e.token]);
    completion[e.token] = now;
    startWork(e.node);
    dispatch();
  }
  result.makespan_ns = now;
  result.p99_latency_ns = quantile(completion, 0.99);
  return result;
}

double idealMakespanNs(std::span<const TokenFeatures> tokens, std::span<const SimNode> nodes,
                       const std::function<double(const TokenFeatures&)>& true_cost_ns) {
  double capacity = 0;  // nominal-speed work per ns across the cluster
  for (const auto& n : nodes) {
    capacity += std::max<uint32_t>(n.workers, 1) / std::max(n.speed_factor, 1e-9);
  }
  double work = 0, longest = 0;
  for (const auto& t : tokens) {
    double best = 0;
    for (size_t j = 0; j < nodes.size(); ++j) {
      TokenFeatures f = t;
      f.node_index = static_cast<uint32_t>(j);
      f.node_speed = nodes[j].speed_factor;
      f.node_load = 0;
      const double c = true_cost_ns(f);
      if (j == 0 || c < best) best = c;
      if (j == 0) f.node_speed = 1.0;
    }
    TokenFeatures nominal = t;
    nominal.node_speed = 1.0;
    nominal.node_load = 0;
    work += true_cost_ns(nominal);
    longest = std::max(longest, best);
  }
  return capacity > 0 ? std::max(work / capacity, longest) : 0;
}

}  // namespace tokengate::costmodel

// MemoryLinkNetwork / MemoryLinkSocket: an in-memory LinkSocket for the node's
// coordinator link, after Seastar's loopback_socket.hh. The test plays the
// coordinator: it reads what the node sent, pushes frames to the node's
// current connection, and can partition the network.
//
// The model follows ZeroMQ's DEALER closely enough for the link's rules:
// frames sent while partitioned stay queued in that connection and are
// delivered when the partition heals, unless the connection was abandoned
// (reconnect) first; frames to the node while partitioned are lost.
//
// Single-threaded: the test thread drives both ends.
#pragma once

#include <deque>
#include <memory>
#include <string>
#include <vector>

#include "common/status.h"
#include "node/link/link_socket.h"

namespace tokengate::testing {

class MemoryLinkNetwork {
 public:
  struct Sent {
    uint64_t connection;  // 1-based: which connection carried it
    std::string bytes;
  };

  node::LinkSocketFactory factory() {
    return [this]() -> StatusOr<std::unique_ptr<node::LinkSocket>> {
      if (refuse_connects_) return absl::UnavailableError("connection refused (test)");
      return std::unique_ptr<node::LinkSocket>(new Socket(*this, ++connections_));
    };
  }

  // Everything delivered to the coordinator so far (taken by the caller).
  std::vector<Sent> take() {
    deliver();
    std::vector<Sent> out(delivered_.begin(), delivered_.end());
    delivered_.clear();
    return out;
  }
  // Queues a frame to the node's current connection (lost while partitioned
  // or when there is no open connection).
  void push(std::string frame) {
    if (partitioned_ || current_ == nullptr) return;
    current_->inbox_.push_back(std::move(frame));
  }
  void partition() { partitioned_ = true; }
  void heal() {
    partitioned_ = false;
    deliver();
  }
  uint64_t connections() const { return connections_; }
  bool open() const { return current_ != nullptr; }
  size_t dropSends(size_t n) { return drop_sends_ = n; }
  void refuseConnects(bool refuse) { refuse_connects_ = refuse; }

 private:
  class Socket final : public node::LinkSocket {
   public:
    Socket(MemoryLinkNetwork& net, uint64_t id) : net_(net), id_(id) { net_.current_ = this; }
    ~Socket() override {
      if (!abandoned_) net_.deliverFrom(*this);  // linger
      if (net_.current_ == this) net_.current_ = nullptr;
    }
    bool send(std::string frame) override {
      if (net_.drop_sends_ > 0) {
        --net_.drop_sends_;
        return false;
      }
      outbox_.push_back(std::move(frame));
      net_.deliverFrom(*this);
      return true;
    }
    size_t receive(size_t max_frames,
                   const std::function<void(const void*, size_t)>& on_frame) override {
      size_t n = 0;
      while (n < max_frames && !inbox_.empty()) {
        std::string f = std::move(inbox_.front());
        inbox_.pop_front();
        on_frame(f.data(), f.size());
        ++n;
      }
      return n;
    }
    Status wait(int, Nanos, bool& readable) override {
      readable = !inbox_.empty();
      return absl::OkStatus();
    }
    void abandon() override {
      abandoned_ = true;
      outbox_.clear();
    }

   private:
    friend class MemoryLinkNetwork;
    MemoryLinkNetwork& net_;
    const uint64_t id_;
    bool abandoned_ = false;
    std::deque<std::string> outbox_;
    std::deque<std::string> inbox_;
  };

  void deliverFrom(Socket& s) {
    if (partitioned_) return;
    while (!s.outbox_.empty()) {
      delivered_.push_back({s.id_, std::move(s.outbox_.front())});
      s.outbox_.pop_front();
    }
  }
  void deliver() {
    if (current_ != nullptr) deliverFrom(*current_);
  }

  Socket* current_ = nullptr;
  uint64_t connections_ = 0;
  bool partitioned_ = false;
  bool refuse_connects_ = false;
  size_t drop_sends_ = 0;
  std::deque<Sent> delivered_;
};

}  // namespace tokengate::testing

#include "client/local_cluster.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <sched.h>
#include <signal.h>
#include <spdlog/spdlog.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>

#include "common/security/curve_flags.h"

namespace tokengate::client {

std::string selfDir() {
  std::error_code ec;
  auto p = std::filesystem::read_symlink("/proc/self/exe", ec);
  return ec ? std::string(".") : p.parent_path().string();
}

uint64_t peakRssOf(pid_t pid) {
  std::ifstream in(fmt::format("/proc/{}/status", pid));
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind("VmHWM:", 0) == 0) {
      std::istringstream ss(line.substr(6));
      uint64_t kb = 0;
      ss >> kb;
      return kb * 1024;
    }
  }
  return 0;
}

double cpuSecondsOf(pid_t pid) {
  std::ifstream in(fmt::format("/proc/{}/stat", pid));
  std::string stat((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  // Fields after the command name (which may contain spaces) start after the last ')':
  // state(3) ... utime(14) stime(15).
  const auto close = stat.rfind(')');
  if (close == std::string::npos) return 0;
  std::istringstream ss(stat.substr(close + 1));
  std::string field;
  uint64_t utime = 0, stime = 0;
  for (int i = 3; i <= 15 && ss >> field; ++i) {
    if (i == 14) utime = std::stoull(field);
    if (i == 15) stime = std::stoull(field);
  }
  return static_cast<double>(utime + stime) / static_cast<double>(sysconf(_SC_CLK_TCK));
}

namespace {
std::vector<int> allowedCpus() {
  cpu_set_t set;
  CPU_ZERO(&set);
  std::vector<int> cpus;
  if (sched_getaffinity(0, sizeof set, &set) == 0)
    for (int c = 0; c < CPU_SETSIZE; ++c)
      if (CPU_ISSET(c, &set)) cpus.push_back(c);
  if (cpus.empty()) cpus.push_back(0);
  return cpus;
}
}  // namespace

pid_t LocalCluster::spawn(const std::string& exe, const std::vector<std::string>& args,
                          int cpu_begin, int cpu_count) {
  std::vector<std::string> all{exe};
  all.insert(all.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& a : all) argv.push_back(a.data());
  argv.push_back(nullptr);
  cpu_set_t set;
  CPU_ZERO(&set);
  for (int i = 0; i < cpu_count; ++i)
    CPU_SET(cpus_[static_cast<size_t>(cpu_begin + i) % cpus_.size()], &set);
  const pid_t parent = getpid();
  pid_t pid = fork();
  if (pid == 0) {
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    if (getppid() != parent) _exit(127);
    if (cpu_count > 0) sched_setaffinity(0, sizeof set, &set);
    execv(exe.c_str(), argv.data());
    _exit(127);
  }
  return pid;
}

StatusOr<std::unique_ptr<LocalCluster>> LocalCluster::start(LocalClusterOptions options) {
  std::unique_ptr<LocalCluster> c(new LocalCluster());
  c->options_ = std::move(options);
  auto& o = c->options_;
  if (o.bin_dir.empty()) o.bin_dir = selfDir();
  const std::string coord = o.bin_dir + "/tokengate-coordinator";
  const std::string node = o.bin_dir + "/tokengate-node";
  for (const auto& exe : {coord, node})
    if (access(exe.c_str(), X_OK) != 0)
      return absl::NotFoundError(fmt::format("{} not found (set --bin-dir)", exe));
  c->cpus_ = allowedCpus();
  char tmpl[] = "/tmp/tokengate-ready-XXXXXX";
  int fd = mkstemp(tmpl);
  if (fd < 0) return absl::InternalError("mkstemp failed");
  close(fd);
  std::filesystem::remove(tmpl);
  c->ready_file_ = tmpl;
  std::vector<std::string> args{"--listen",     "tcp://127.0.0.1:0", "--ready-file",
                                c->ready_file_, "--log-level",       o.log_level};
  if (o.transport == "ipc") {
    char ipc_tmpl[] = "/tmp/tokengate-ipc-XXXXXX";
    if (!mkdtemp(ipc_tmpl)) return absl::InternalError("mkdtemp failed");
    c->ipc_dir_ = ipc_tmpl;
    args.insert(args.end(), {"--listen", fmt::format("ipc://{}/wire.sock", c->ipc_dir_)});
  } else if (o.transport != "tcp") {
    return absl::InvalidArgumentError(
        fmt::format("transport '{}': expected tcp or ipc", o.transport));
  }
  if (o.insecure) {
    args.push_back("--insecure");
    o.node_args.insert(o.node_args.begin(), "--insecure");
  } else {
    char key_tmpl[] = "/tmp/tokengate-keys-XXXXXX";
    if (!mkdtemp(key_tmpl)) return absl::InternalError("mkdtemp failed");
    c->key_dir_ = key_tmpl;
    if (auto st = security::writeClusterKeys(c->key_dir_); !st.ok()) return st;
    for (const char* role : {"operator", "viewer"}) {
      auto kp = security::generateKeyPair();
      if (!kp.ok()) return kp.status();
      if (auto st = security::writeKeyPair(c->key_dir_, role, *kp); !st.ok()) return st;
      if (auto st = security::writePublicKey(
              fmt::format("{}/allow/clients/{}/{}.pub", c->key_dir_, role, role), kp->public_key);
          !st.ok())
        return st;
    }
    args.insert(args.end(), {"--curve-dir", c->key_dir_});
    o.node_args.insert(o.node_args.begin(), {"--curve-dir", c->key_dir_});
  }
  if (!o.gateway.empty()) {
    args.insert(args.end(), {"--gateway", o.gateway});
    if (!o.gateway_token.empty()) args.insert(args.end(), {"--gateway-token", o.gateway_token});
  }
  args.insert(args.end(), o.coordinator_args.begin(), o.coordinator_args.end());
  c->coordinator_args_ = args;
  c->coordinator_ = c->spawn(coord, args, 0, 0);
  if (Status st = c->waitCoordinatorReady(); !st.ok()) return st;
  c->nodes_.assign(o.nodes, -1);
  c->intentionally_down_.assign(o.nodes, false);
  for (size_t i = 0; i < o.nodes; ++i)
    if (auto st = c->startNode(i); !st.ok()) return st;
  if (o.supervise) c->supervisor_ = std::thread([p = c.get()] { p->superviseLoop(); });
  return c;
}

Status LocalCluster::startNode(size_t i) {
  std::lock_guard<std::mutex> lock(mu_);
  if (i >= nodes_.size()) return absl::OutOfRangeError("no such node");
  if (nodes_[i] > 0) return absl::OkStatus();
  std::vector<std::string> args{"--coordinator", endpoint_,     "--id",
                                nodeId(i),       "--log-level", options_.log_level};
  args.insert(args.end(), options_.node_args.begin(), options_.node_args.end());
  if (i < options_.per_node_args.size())
    args.insert(args.end(), options_.per_node_args[i].begin(), options_.per_node_args[i].end());
  int begin = 0, count = 0;
  const int ncpu = static_cast<int>(cpus_.size());
  if (options_.pin && ncpu > 1) {
    const int n = static_cast<int>(nodes_.size());
    if (n <= ncpu) {
      count = ncpu / n;
      begin = static_cast<int>(i) * count;
    } else {
      count = 1;
      begin = static_cast<int>(i) % ncpu;
    }
  }
  nodes_[i] = spawn(options_.bin_dir + "/tokengate-node", args, begin, count);
  intentionally_down_[i] = false;
  return nodes_[i] > 0 ? absl::OkStatus() : absl::InternalError("fork failed");
}

pid_t LocalCluster::nodePid(size_t i) const {
  std::lock_guard<std::mutex> lock(mu_);
  return i < nodes_.size() ? nodes_[i] : -1;
}

Status LocalCluster::killNode(size_t i, int sig) {
  pid_t pid;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (i >= nodes_.size() || nodes_[i] <= 0)
      return absl::FailedPreconditionError("node not running");
    pid = nodes_[i];
    if (!options_.supervise) intentionally_down_[i] = true;
  }
  ::kill(pid, sig);
  if (!options_.supervise) {
    int status;
    waitpid(pid, &status, 0);
    std::lock_guard<std::mutex> lock(mu_);
    nodes_[i] = -1;
  }
  return absl::OkStatus();
}

Status LocalCluster::waitCoordinatorReady() {
  // The ready file: "wire <endpoint>\n" per --listen, "gateway <port>\nready 1\n".
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  while (true) {
    std::ifstream in(ready_file_);
    std::string key, value;
    bool complete = false;
    endpoints_.clear();
    while (in >> key >> value) {
      if (key == "wire") endpoints_.push_back(value);
      if (key == "gateway") gateway_port_ = static_cast<uint16_t>(std::stoi(value));
      if (key == "ready") complete = true;
    }
    if (complete && !endpoints_.empty()) {
      endpoint_ = endpoints_.front();
      for (const auto& ep : endpoints_)
        if (options_.transport == "ipc" && ep.rfind("ipc://", 0) == 0) endpoint_ = ep;
      break;
    }
    int status = 0;
    if (waitpid(coordinator_, &status, WNOHANG) == coordinator_) {
      coordinator_ = -1;
      return absl::UnavailableError("the coordinator exited during start-up (see its log above)");
    }
    if (std::chrono::steady_clock::now() > deadline)
      return absl::DeadlineExceededError("the coordinator did not become ready in 20 s");
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  std::filesystem::remove(ready_file_);
  return absl::OkStatus();
}

Status LocalCluster::restartCoordinator(int sig, const std::function<void()>& while_down) {
  if (coordinator_ > 0) {
    ::kill(coordinator_, sig);
    ::kill(coordinator_, SIGCONT);
    int status;
    waitpid(coordinator_, &status, 0);
    coordinator_ = -1;
  }
  if (while_down) while_down();
  // Same endpoints as before, so nodes and clients reconnect by themselves.
  std::vector<std::string> args = coordinator_args_;
  const std::string tcp = endpoints_.empty() ? endpoint_ : endpoints_.front();
  for (size_t i = 0; i + 1 < args.size(); ++i) {
    if (args[i] == "--listen" && args[i + 1].rfind("tcp://", 0) == 0) args[i + 1] = tcp;
    if (args[i] == "--gateway" && gateway_port_ != 0) {
      const auto colon = args[i + 1].rfind(':');
      args[i + 1] = args[i + 1].substr(0, colon) + ":" + std::to_string(gateway_port_);
    }
  }
  coordinator_ = spawn(options_.bin_dir + "/tokengate-coordinator", args, 0, 0);
  return waitCoordinatorReady();
}

Status LocalCluster::signalNode(size_t i, int sig) {
  std::lock_guard<std::mutex> lock(mu_);
  if (i >= nodes_.size() || nodes_[i] <= 0)
    return absl::FailedPreconditionError("node not running");
  if (::kill(nodes_[i], sig) != 0) return absl::InternalError("kill() failed");
  return absl::OkStatus();
}

void LocalCluster::superviseLoop() {
  while (!stopping_) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
    for (size_t i = 0; i < options_.nodes && !stopping_; ++i) {
      pid_t pid;
      {
        std::lock_guard<std::mutex> lock(mu_);
        pid = nodes_[i];
      }
      if (pid <= 0) continue;
      int status = 0;
      if (waitpid(pid, &status, WNOHANG) == pid) {
        {
          std::lock_guard<std::mutex> lock(mu_);
          nodes_[i] = -1;
        }
        if (stopping_) break;
        spdlog::info("supervisor: {} exited ({}), restarting", nodeId(i),
                     WIFSIGNALED(status) ? fmt::format("signal {}", WTERMSIG(status))
                                         : fmt::format("status {}", WEXITSTATUS(status)));
        ++restarts_;
        (void)startNode(i);
      }
    }
  }
}

uint64_t LocalCluster::peakRssBytes() const {
  uint64_t total = coordinator_ > 0 ? peakRssOf(coordinator_) : 0;
  std::lock_guard<std::mutex> lock(mu_);
  for (pid_t p : nodes_)
    if (p > 0) total += peakRssOf(p);
  return total;
}

void LocalCluster::stop(int grace_ms) {
  stopping_ = true;
  if (supervisor_.joinable()) supervisor_.join();
  std::vector<pid_t> pids;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (auto& p : nodes_)
      if (p > 0) pids.push_back(p), p = -1;
  }
  // Nodes first (they drain and say bye), then the coordinator.
  auto terminate = [grace_ms](const std::vector<pid_t>& group) {
    for (pid_t p : group) ::kill(p, SIGTERM), ::kill(p, SIGCONT);  // a frozen node too
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(grace_ms);
    for (pid_t p : group) {
      int status;
      while (waitpid(p, &status, WNOHANG) == 0) {
        if (std::chrono::steady_clock::now() > deadline) {
          ::kill(p, SIGKILL);
          waitpid(p, &status, 0);
          break;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
      }
    }
  };
  terminate(pids);
  if (coordinator_ > 0) terminate({coordinator_});
  coordinator_ = -1;
}

LocalCluster::~LocalCluster() {
  stop();
  if (!key_dir_.empty()) {
    std::error_code ec;
    std::filesystem::remove_all(key_dir_, ec);
  }
  if (!ipc_dir_.empty()) {
    std::error_code ec;
    std::filesystem::remove_all(ipc_dir_, ec);
  }
}

security::ClientCurve LocalCluster::clientCurve(security::Role role) const {
  if (key_dir_.empty()) return {};
  security::ClientCurve c;
  auto secret = security::readKeyFile(fmt::format("{}/{}.key", key_dir_, security::roleName(role)));
  auto server = security::readKeyFile(key_dir_ + "/server.pub");
  if (!secret.ok() || !server.ok()) return {};
  c.secret_key = *secret;
  c.server_key = *server;
  return c;
}

}  // namespace tokengate::client

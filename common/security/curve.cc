#include "common/security/curve.h"

#include <capnp/schema.h>
#include <fcntl.h>
#include <fmt/format.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <vector>

namespace tokengate::security {
namespace fs = std::filesystem;

namespace {

std::string trim(std::string_view s) {
  const auto b = s.find_first_not_of(" \t\r\n");
  if (b == std::string_view::npos) return {};
  const auto e = s.find_last_not_of(" \t\r\n");
  return std::string(s.substr(b, e - b + 1));
}

// Lines of a key or list file without comments and blanks.
StatusOr<std::vector<std::string>> contentLines(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(fmt::format("cannot read {}", path));
  std::vector<std::string> lines;
  std::string line;
  while (std::getline(in, line)) {
    // Only whole-line comments: '#' is a Z85 digit, so it may occur inside a key.
    line = trim(line);
    if (!line.empty() && line[0] != '#') lines.push_back(std::move(line));
  }
  return lines;
}

Status writeFile(const std::string& path, const std::string& text, mode_t mode) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
  if (fd < 0)
    return absl::AlreadyExistsError(
        fmt::format("cannot create {}: {}", path, std::strerror(errno)));
  // open() applies the umask; the mode is part of the contract (0600 for secrets).
  (void)fchmod(fd, mode);
  size_t done = 0;
  while (done < text.size()) {
    const ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n <= 0) {
      ::close(fd);
      return absl::InternalError(fmt::format("cannot write {}", path));
    }
    done += static_cast<size_t>(n);
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0)
    return absl::InternalError(fmt::format("cannot write {}", path));
  return absl::OkStatus();
}

// Regular files of a directory, sorted (so duplicate-role errors are deterministic).
std::vector<std::string> filesIn(const fs::path& dir) {
  std::vector<std::string> out;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator(dir, ec)) {
    const auto name = e.path().filename().string();
    if (name.empty() || name[0] == '.') continue;  // ..data symlinks of Kubernetes volumes
    if (e.is_regular_file(ec)) out.push_back(e.path().string());
  }
  std::sort(out.begin(), out.end());
  return out;
}

}  // namespace

bool curveAvailable() { return zmq_has("curve") == 1; }

bool isZ85Key(std::string_view text) {
  if (text.size() != kZ85KeyChars) return false;
  std::array<uint8_t, 32> raw{};
  const std::string copy(text);
  return zmq_z85_decode(raw.data(), copy.c_str()) != nullptr;
}

StatusOr<KeyPair> generateKeyPair() {
  if (!curveAvailable()) return absl::UnimplementedError("this libzmq has no CURVE support");
  char pub[kZ85KeyChars + 1] = {}, sec[kZ85KeyChars + 1] = {};
  if (zmq_curve_keypair(pub, sec) != 0)
    return absl::InternalError(fmt::format("zmq_curve_keypair: {}", zmq_strerror(zmq_errno())));
  return KeyPair{pub, sec};
}

StatusOr<std::string> publicKeyOf(const std::string& secret_key) {
  if (!isZ85Key(secret_key)) return absl::InvalidArgumentError("not a Z85 CURVE secret key");
  char pub[kZ85KeyChars + 1] = {};
  if (zmq_curve_public(pub, secret_key.c_str()) != 0)
    return absl::InternalError(fmt::format("zmq_curve_public: {}", zmq_strerror(zmq_errno())));
  return std::string(pub);
}

StatusOr<std::string> readKeyFile(const std::string& path) {
  auto lines = contentLines(path);
  if (!lines.ok()) return lines.status();
  if (lines->empty()) return absl::InvalidArgumentError(fmt::format("{}: no key", path));
  std::string key;
  std::istringstream(lines->front()) >> key;  // words after the key are a comment
  if (!isZ85Key(key))
    return absl::InvalidArgumentError(
        fmt::format("{}: not a Z85 CURVE key (want {} characters)", path, kZ85KeyChars));
  return key;
}

StatusOr<std::string> keyFromTextOrFile(const std::string& text) {
  if (isZ85Key(text)) return text;
  return readKeyFile(text);
}

Status writeKeyPair(const std::string& dir, const std::string& name, const KeyPair& keys) {
  std::error_code ec;
  if (!fs::exists(dir, ec)) {
    fs::create_directories(dir, ec);
    if (ec) return absl::InternalError(fmt::format("cannot create {}: {}", dir, ec.message()));
    fs::permissions(dir, fs::perms::owner_all, ec);
  }
  const auto base = (fs::path(dir) / name).string();
  const std::string sec_path = base + ".key", pub_path = base + ".pub";
  if (fs::exists(sec_path, ec) || fs::exists(pub_path, ec))
    return absl::AlreadyExistsError(
        fmt::format("{}.key or .pub exists: refusing to overwrite a key", base));
  if (auto st = writeFile(sec_path,
                          fmt::format("# TokenGate CURVE secret key ({}): keep private\n{}\n", name,
                                      keys.secret_key),
                          0600);
      !st.ok())
    return st;
  return writePublicKey(pub_path, keys.public_key);
}

Status writePublicKey(const std::string& path, const std::string& public_key) {
  return writeFile(path, fmt::format("# TokenGate CURVE public key\n{}\n", public_key), 0644);
}

Status AllowList::add(const std::string& public_key, Role role, const std::string& origin) {
  if (!isZ85Key(public_key))
    return absl::InvalidArgumentError(fmt::format("{}: not a Z85 CURVE public key", origin));
  auto [it, added] = keys_.try_emplace(public_key, role);
  if (!added && it->second != role)
    return absl::InvalidArgumentError(fmt::format("{}: key {}... listed as both {} and {}", origin,
                                                  public_key.substr(0, 8), roleName(it->second),
                                                  roleName(role)));
  return absl::OkStatus();
}

Status AllowList::addNodes(const std::string& path) {
  std::error_code ec;
  if (fs::is_directory(path, ec)) {
    for (const auto& f : filesIn(path)) {
      auto key = readKeyFile(f);
      if (!key.ok()) return key.status();
      if (auto st = add(*key, Role::kNode, f); !st.ok()) return st;
    }
    return absl::OkStatus();
  }
  auto lines = contentLines(path);
  if (!lines.ok()) return lines.status();
  for (const auto& line : *lines) {
    std::istringstream in(line);
    std::string a, b;
    in >> a >> b;
    // "<key> [comment]" or "node <key> [comment]"
    if (auto st = add(a == "node" ? b : a, Role::kNode, path); !st.ok()) return st;
  }
  return absl::OkStatus();
}

Status AllowList::addClients(const std::string& path) {
  std::error_code ec;
  if (fs::is_directory(path, ec)) {
    if (!filesIn(path).empty())
      return absl::InvalidArgumentError(fmt::format(
          "{}: client keys go in the subdirectories admin/, operator/ or viewer/", path));
    for (const auto* role_dir : {"admin", "operator", "viewer"}) {
      const auto sub = fs::path(path) / role_dir;
      if (!fs::is_directory(sub, ec)) continue;
      for (const auto& f : filesIn(sub)) {
        auto key = readKeyFile(f);
        if (!key.ok()) return key.status();
        if (auto st = add(*key, *parseRole(role_dir), f); !st.ok()) return st;
      }
    }
    return absl::OkStatus();
  }
  auto lines = contentLines(path);
  if (!lines.ok()) return lines.status();
  for (const auto& line : *lines) {
    std::istringstream in(line);
    std::string role, key;
    in >> role >> key;
    auto r = parseRole(role);
    if (!r || *r == Role::kNode || key.empty())
      return absl::InvalidArgumentError(fmt::format(
          "{}: client allow-list lines are '<admin|operator|viewer> <key>', got '{}'", path, line));
    if (auto st = add(key, *r, path); !st.ok()) return st;
  }
  return absl::OkStatus();
}

Role AllowList::roleOf(const std::string& public_key) const {
  auto it = keys_.find(public_key);
  return it == keys_.end() ? Role::kNone : it->second;
}

size_t AllowList::count(Role r) const {
  return static_cast<size_t>(
      std::count_if(keys_.begin(), keys_.end(), [r](const auto& kv) { return kv.second == r; }));
}

Status applyServerKeys(zmq::socket_t& socket, const ServerCurve& curve) {
  if (!curve.enabled()) return absl::OkStatus();
  if (!curveAvailable()) return absl::UnimplementedError("this libzmq has no CURVE support");
  if (!isZ85Key(curve.secret_key)) return absl::InvalidArgumentError("bad CURVE secret key");
  try {
    socket.set(zmq::sockopt::curve_server, 1);
    socket.set(zmq::sockopt::curve_secretkey, curve.secret_key);
    socket.set(zmq::sockopt::zap_domain, kZapDomain);
    // libzmq 4.3 admits every key when no ZAP handler is bound (ZMQ_ZAP_ENFORCE_DOMAIN is draft
    // API): the caller binds the handler (zap.h) before binding this socket and keeps it bound
    // for the socket's whole life.
  } catch (const zmq::error_t& e) {
    return absl::InternalError(fmt::format("CURVE server setup: {}", e.what()));
  }
  return absl::OkStatus();
}

Status applyClientKeys(zmq::socket_t& socket, const ClientCurve& curve) {
  if (!curve.enabled()) return absl::OkStatus();
  if (!curveAvailable()) return absl::UnimplementedError("this libzmq has no CURVE support");
  if (!isZ85Key(curve.secret_key)) return absl::InvalidArgumentError("bad CURVE secret key");
  if (!isZ85Key(curve.server_key))
    return absl::InvalidArgumentError(
        "CURVE needs the coordinator's public key (--curve-server-key)");
  std::string pub = curve.public_key;
  if (pub.empty()) {
    auto derived = publicKeyOf(curve.secret_key);
    if (!derived.ok()) return derived.status();
    pub = *derived;
  }
  try {
    socket.set(zmq::sockopt::curve_serverkey, curve.server_key);
    socket.set(zmq::sockopt::curve_publickey, pub);
    socket.set(zmq::sockopt::curve_secretkey, curve.secret_key);
  } catch (const zmq::error_t& e) {
    return absl::InternalError(fmt::format("CURVE client setup: {}", e.what()));
  }
  return absl::OkStatus();
}

std::string userIdOf(Role role, const std::string& public_key) {
  return fmt::format("{} {}", roleName(role), public_key);
}

PeerIdentity parseUserId(std::string_view user_id) {
  PeerIdentity id;
  const auto space = user_id.find(' ');
  if (space == std::string_view::npos) return id;
  auto role = parseRole(user_id.substr(0, space));
  if (!role) return id;
  id.role = *role;
  id.public_key = std::string(user_id.substr(space + 1));
  return id;
}

std::string frameKindName(wire::Frame::Which kind) {
  const auto fields = capnp::Schema::from<wire::Frame>().getUnionFields();
  const auto i = static_cast<unsigned>(kind);
  if (i < fields.size()) return fields[i].getProto().getName().cStr();
  return fmt::format("#{}", i);
}

namespace {
// The least role a command of common/roles.h needs (the names below are all listed there).
Role least(std::string_view command) { return commandRole(command).value_or(Role::kAdmin); }
}  // namespace

bool roleAllows(Role role, wire::Frame::Which kind) {
  using F = wire::Frame;
  if (role == Role::kNode)
    return kind == F::HELLO || kind == F::HEARTBEAT || kind == F::RESULT_BATCH || kind == F::BYE ||
           kind == F::PING;
  // Client frames are the gateway's commands over ZeroMQ: the same least roles.
  switch (kind) {
    case F::SUBMIT_JOB:
      return roleAtLeast(role, least("submit"));
    case F::CANCEL_JOB:
      return roleAtLeast(role, least("job.cancel"));
    case F::WATCH_JOB:
      return roleAtLeast(role, least("job.status"));
    case F::STATS_REQUEST:
      return roleAtLeast(role, least("cluster.stats"));
    case F::PING:
    case F::ADMIN_REQUEST:  // the request inside decides (adminRequestRole)
      return roleAtLeast(role, Role::kViewer);
    default:
      return false;
  }
}

Role adminRequestRole(wire::AdminRequest::Which request) {
  using A = wire::AdminRequest;
  switch (request) {
    case A::LIST_JOBS:
      return least("job.list");
    case A::LIST_OPS:
      return least("op.list");
    case A::LIST_NODES:
      return least("node.list");
    case A::PAUSE_OP:
      return least("op.pause");
    case A::RESUME_OP:
      return least("op.resume");
    case A::DRAIN_OP:
      return least("op.drain");
    case A::SET_OP_LIMITS:
      return least("op.limits");
    case A::DRAIN_NODE:
      return least("node.drain");
    case A::UNDRAIN_NODE:
      return least("node.undrain");
    case A::EVICT_NODE:
      return least("node.evict");
  }
  return Role::kAdmin;  // a request kind newer than this table: admins only
}

std::optional<wire::Frame::Which> peekFrameKind(const void* data, size_t size) {
  static const uint32_t disc_byte =
      capnp::Schema::from<wire::Frame>().getProto().getStruct().getDiscriminantOffset() * 2;
  const auto* p = static_cast<const uint8_t*>(data);
  auto u32 = [p](size_t at) {
    uint32_t v;
    std::memcpy(&v, p + at, sizeof v);
    return v;
  };
  if (size < 8) return std::nullopt;
  const uint64_t segments = uint64_t{u32(0)} + 1;
  if (segments > 512) return std::nullopt;
  const uint64_t header = (4 + 4 * segments + 7) & ~uint64_t{7};
  const uint64_t seg0_words = u32(4);
  if (seg0_words == 0 || header + seg0_words * 8 > size) return std::nullopt;
  uint64_t ptr;
  std::memcpy(&ptr, p + header, sizeof ptr);
  if (ptr == 0 || (ptr & 3) != 0) return std::nullopt;  // null or not a near struct pointer
  const int64_t offset = static_cast<int32_t>(static_cast<uint32_t>(ptr)) >> 2;
  const uint64_t data_words = (ptr >> 32) & 0xffff;
  const int64_t start = 1 + offset;  // in words from the start of segment 0
  if (start < 1 || static_cast<uint64_t>(start) + data_words > seg0_words) return std::nullopt;
  uint16_t which = 0;  // outside the data section: the default, 0
  if (disc_byte + 2 <= data_words * 8)
    std::memcpy(&which, p + header + static_cast<uint64_t>(start) * 8 + disc_byte, sizeof which);
  return static_cast<wire::Frame::Which>(which);
}

}  // namespace tokengate::security

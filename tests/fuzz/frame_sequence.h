// Fuzz input format shared by the frame targets and the seed generator: a
// sequence of records [peer: u8][length: u32 little-endian][bytes], so one
// input can carry a conversation (hello, submit, results...) and the fuzzer
// mutates frames and their order. A truncated last record takes what is left.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

namespace tokengate::fuzz {

struct Record {
  uint8_t peer;
  const uint8_t* data;
  size_t size;
};

inline std::vector<Record> splitRecords(const uint8_t* data, size_t size, size_t max_records) {
  std::vector<Record> out;
  size_t i = 0;
  while (i + 5 <= size && out.size() < max_records) {
    const uint8_t peer = data[i];
    uint32_t len = 0;
    std::memcpy(&len, data + i + 1, 4);
    i += 5;
    const size_t n = std::min<size_t>(len, size - i);
    out.push_back({peer, data + i, n});
    i += n;
  }
  return out;
}

inline void appendRecord(std::string& out, uint8_t peer, const std::string& frame) {
  out.push_back(static_cast<char>(peer));
  const auto len = static_cast<uint32_t>(frame.size());
  char b[4];
  std::memcpy(b, &len, 4);
  out.append(b, 4);
  out += frame;
}

}  // namespace tokengate::fuzz

// Helpers the QEMU tests share: where qemu-system-x86_64 is, and the words
// of a `cellink qemu-args` answer.
#pragma once

#include <unistd.h>

#include <sstream>
#include <string>
#include <vector>

namespace cellink::integration {

// The path of qemu-system-x86_64, or empty when it is not installed.
inline std::string find_qemu() {
  for (const char* dir : {"/usr/bin", "/usr/local/bin"}) {
    std::string path = std::string(dir) + "/qemu-system-x86_64";
    if (::access(path.c_str(), X_OK) == 0) return path;
  }
  return {};
}

inline std::vector<std::string> split_words(const std::string& text) {
  std::istringstream stream(text);
  std::vector<std::string> words;
  for (std::string word; stream >> word;) words.push_back(word);
  return words;
}

inline constexpr const char* kNoQemuReason =
    "qemu-system-x86_64 is not installed (apt-get install qemu-system-x86): "
    "the real-QEMU tests cannot run on this machine";

}  // namespace cellink::integration

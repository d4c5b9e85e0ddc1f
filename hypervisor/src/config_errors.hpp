// Private to hypervisor/src: how the configuration reader words and collects
// its errors. Shared by the [[cell]]/[[link]] validator (config.cpp) and the
// [[console]] reader (config_consoles.cpp). Spec: docs/config.md,
// "Validation and errors".
//
// Threading: plain values; no shared state.
#pragma once

#include <algorithm>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <toml++/toml.h>

#include "cellink/hypervisor/config.hpp"

namespace cellink::hypervisor::detail {

// User text inside a one-line message: quoted, control bytes escaped.
inline std::string in_quotes(std::string_view text, char quote = '\'') {
  std::string out(1, quote);
  for (const char c : text) {
    const auto byte = static_cast<unsigned char>(c);
    if (byte < 0x20 || byte == 0x7f) {
      out += fmt::format("\\x{:02x}", byte);
    } else {
      out += c;
    }
  }
  out += quote;
  return out;
}

inline std::string_view type_name(toml::node_type type) {
  switch (type) {
    case toml::node_type::string: return "a string";
    case toml::node_type::integer: return "an integer";
    case toml::node_type::floating_point: return "a floating-point number";
    case toml::node_type::boolean: return "a boolean";
    case toml::node_type::table: return "a table";
    case toml::node_type::array: return "an array";
    case toml::node_type::date: return "a date";
    case toml::node_type::time: return "a time";
    case toml::node_type::date_time: return "a date-time";
    case toml::node_type::none: break;
  }
  return "nothing";
}

inline std::string join(std::span<const std::string_view> words) {
  std::string out;
  for (const std::string_view word : words) {
    out += fmt::format("{}'{}'", out.empty() ? "" : ", ", word);
  }
  return out;
}

// Collects errors, each prefixed with "source:line:col: ".
class ErrorSink {
 public:
  explicit ErrorSink(std::string_view source) : source_(source) {}

  void add(const toml::source_position& where, std::string message) {
    errors_.push_back({fmt::format("{}:{}:{}: {}", source_, where.line, where.column, message),
                       where.line, where.column});
  }

  [[nodiscard]] std::string at(const toml::source_position& where) const {
    return fmt::format("{}:{}:{}", source_, where.line, where.column);
  }

  // The errors in file order; checks run per object, not per line.
  [[nodiscard]] std::vector<ConfigError> take() {
    std::stable_sort(errors_.begin(), errors_.end(), [](const auto& a, const auto& b) {
      return std::pair{a.line, a.column} < std::pair{b.line, b.column};
    });
    return std::move(errors_);
  }

 private:
  std::string source_;
  std::vector<ConfigError> errors_;
};

// Reads every [[console]] table of `root` into config.consoles, checking each
// against the cells and links already in `config` (docs/config.md,
// "[[console]]").
void read_consoles(const toml::table& root, Config& config, ErrorSink& errors);

}  // namespace cellink::hypervisor::detail

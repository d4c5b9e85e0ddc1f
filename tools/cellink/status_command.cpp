// `cellink status`: ask the daemon over its control socket.
#include <poll.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <system_error>
#include <vector>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "cellink/linux-uio/unix_socket.hpp"
#include "commands.hpp"

namespace cellink::cli {
namespace {

constexpr int kReplyTimeoutMs = 5000;

std::string doorbell_summary(const nlohmann::json& peer) {
  std::string text;
  const auto& rung = peer["doorbells_rung_by_daemon"];
  for (std::size_t vector = 0; vector < rung.size(); ++vector) {
    std::string pending = "-";
    if (peer.contains("doorbells_pending")) {
      pending = std::to_string(peer["doorbells_pending"][vector].get<std::uint64_t>());
    }
    text += fmt::format("{}v{} {}/{}", text.empty() ? "" : " ", vector, pending,
                        rung[vector].get<std::uint64_t>());
  }
  return text;
}

// A virtio link's peers keep Jailhouse's raw states (0 RESET, 1 READY), not
// cellink's phase and epoch (docs/virtio-over-ivshmem.md).
std::string state_text(const nlohmann::json& link, const nlohmann::json& state) {
  if (link["protocol"].get<std::string>().starts_with("virtio")) {
    switch (state["raw"].get<std::uint32_t>()) {
      case 0: return "RESET (virtio)";
      case 1: return "READY (virtio)";
      default: return fmt::format("{:#x} (virtio: invalid)", state["raw"].get<std::uint32_t>());
    }
  }
  return fmt::format("{} epoch {}", state["phase"].get<std::string>(),
                     state["epoch"].get<std::uint32_t>());
}

// The status files `cellink console serve` keeps in RUNTIME_DIR/console
// (docs/console.md), sorted by cell; unreadable ones are skipped.
nlohmann::json console_statuses(const std::filesystem::path& runtime_dir) {
  nlohmann::json consoles = nlohmann::json::array();
  std::error_code error;
  std::vector<std::filesystem::path> files;
  for (const auto& entry : std::filesystem::directory_iterator(runtime_dir / "console", error)) {
    if (entry.path().string().ends_with(".status.json")) files.push_back(entry.path());
  }
  std::sort(files.begin(), files.end());
  for (const auto& file : files) {
    std::ifstream stream(file);
    nlohmann::json doc = nlohmann::json::parse(stream, nullptr, false);
    if (doc.is_object() && doc.contains("cell") && doc.contains("state")) {
      consoles.push_back(std::move(doc));
    }
  }
  return consoles;
}

void print_consoles(const nlohmann::json& consoles) {
  if (consoles.empty()) return;
  std::cout << "\nconsoles (cellink console serve):\n";
  for (const auto& console : consoles) {
    std::cout << fmt::format("  {:<16} {}\n", console["cell"].get<std::string>(),
                             console["state"].get<std::string>());
    std::cout << fmt::format(
        "  {:<16} pty {}, log {}, {} viewer(s), {} B from the guest, {} B to it\n", "",
        console.value("pty", std::string{"-"}), console.value("log", std::string{"-"}),
        console.contains("viewers") ? console["viewers"].size() : 0,
        console.value("bytes_from_guest", std::uint64_t{0}),
        console.value("bytes_to_guest", std::uint64_t{0}));
  }
}

}  // namespace

std::optional<std::string> query_status(const std::filesystem::path& runtime_dir,
                                        std::string& error) {
  const std::filesystem::path path = runtime_dir / "control.sock";
  int failure = 0;
  const linux_uio::UniqueFd fd = linux_uio::connect_unix(path, failure);
  if (!fd) {
    error = fmt::format(
        "no daemon answers on {}: {} (start one with `cellink daemon "
        "--runtime-dir {}`)",
        path.string(), std::system_category().message(failure), runtime_dir.string());
    return std::nullopt;
  }
  const std::string request = "status\n";
  if (::send(fd.get(), request.data(), request.size(), MSG_NOSIGNAL) !=
      static_cast<ssize_t>(request.size())) {
    error = "cannot send to " + path.string();
    return std::nullopt;
  }
  std::string reply;
  char buffer[4096];
  for (;;) {
    pollfd entry{fd.get(), POLLIN, 0};
    if (::poll(&entry, 1, kReplyTimeoutMs) <= 0) {
      error = "the daemon on " + path.string() + " did not answer within 5 s";
      return std::nullopt;
    }
    const ssize_t got = ::read(fd.get(), buffer, sizeof(buffer));
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) break;
    reply.append(buffer, static_cast<std::size_t>(got));
  }
  return reply;
}

int run_status(const std::filesystem::path& runtime_dir, bool json) {
  std::string error;
  const std::optional<std::string> reply = query_status(runtime_dir, error);
  if (!reply) {
    std::cerr << "cellink status: " << error << "\n";
    return 1;
  }
  const nlohmann::json consoles = console_statuses(runtime_dir);
  if (json) {
    nlohmann::json status = nlohmann::json::parse(*reply, nullptr, false);
    if (!status.is_object()) {
      std::cout << *reply;
      return 0;
    }
    status["consoles"] = consoles;
    std::cout << status.dump(2) << "\n";
    return 0;
  }
  const nlohmann::json status = nlohmann::json::parse(*reply, nullptr, false);
  if (status.is_discarded() || !status.contains("daemon")) {
    std::cerr << "cellink status: the daemon sent an unreadable reply\n";
    return 1;
  }
  const auto& daemon = status["daemon"];
  std::cout << fmt::format("daemon pid {}, runtime dir {}, config {}\n", daemon["pid"].get<long>(),
                           daemon["runtime_dir"].get<std::string>(),
                           daemon["config"].get<std::string>());
  for (const auto& link : status["links"]) {
    std::cout << fmt::format("\nlink '{}': protocol {}, {} vector(s), backing {}, {} KiB{}\n",
                             link["name"].get<std::string>(), link["protocol"].get<std::string>(),
                             link["vectors"].get<int>(), link["backing"].get<std::string>(),
                             link["memory_size"].get<std::uint64_t>() / 1024,
                             link["adopted"].get<bool>() ? " (adopted)" : "");
    std::cout << fmt::format("  {:<3} {:<16} {:<34} {:<18} {}\n", "id", "cell", "client", "state",
                             "doorbells v: pending/rung-by-daemon");
    for (const auto& peer : link["peers"]) {
      std::string client = "not connected";
      if (peer["connected"].get<bool>()) {
        client = peer["client"].get<std::string>() == "qemu"
                     ? fmt::format("qemu (pid {})", peer["pid"].get<long>())
                     : fmt::format("pid {} ({})", peer["pid"].get<long>(),
                                   peer["program"].get<std::string>());
        if (peer["reattached"].get<bool>()) client += " re-attached";
      }
      const auto& state = peer["state"];
      std::cout << fmt::format("  {:<3} {:<16} {:<34} {:<18} {}\n", peer["id"].get<int>(),
                               peer["cell"].get<std::string>(), client, state_text(link, state),
                               doorbell_summary(peer));
    }
  }
  print_consoles(consoles);
  return 0;
}

}  // namespace cellink::cli

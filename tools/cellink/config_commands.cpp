// `cellink check` and `cellink qemu-args`: commands that read a config only.
#include <iostream>

#include <fmt/format.h>

#include "commands.hpp"

namespace cellink::cli {

std::optional<hypervisor::Config> load_config_or_report(
    const std::optional<std::filesystem::path>& path) {
  hypervisor::ConfigResult result =
      path ? hypervisor::load_config(*path) : hypervisor::load_default_config();
  if (result.ok()) return std::move(result.config);
  for (const hypervisor::ConfigError& error : result.errors) std::cerr << error.message << "\n";
  std::cerr << fmt::format("{}: {} error(s); nothing was started\n",
                           path ? path->string() : "<embedded default>", result.errors.size());
  return std::nullopt;
}

int run_check(const std::filesystem::path& config_path) {
  const std::optional<hypervisor::Config> config = load_config_or_report(config_path);
  if (!config) return 1;
  std::cout << hypervisor::format_layouts(*config);
  std::cout << fmt::format("{}: ok, {} cell(s), {} link(s)\n", config_path.string(),
                           config->cells.size(), config->links.size());
  return 0;
}

std::string inmate_machine_words(const std::filesystem::path& inmate) {
  // isa-debug-exit: the inmate's exit(code) ends QEMU with status 2 * code + 1.
  return fmt::format(
      "-accel tcg -machine q35 -m 32M -nographic -no-reboot -nic none "
      "-device isa-debug-exit,iobase=0xf4,iosize=0x04 -kernel {}",
      std::filesystem::absolute(inmate).string());
}

int run_qemu_args(const std::string& cell, const std::optional<std::filesystem::path>& path,
                  const std::filesystem::path& runtime_dir, const std::string& link_filter,
                  const std::optional<std::filesystem::path>& inmate) {
  const std::optional<hypervisor::Config> config = load_config_or_report(path);
  if (!config) return 1;
  if (config->find_cell(cell) == nullptr) {
    std::string known;
    for (const hypervisor::CellConfig& each : config->cells) {
      known += (known.empty() ? "" : ", ") + each.name;
    }
    std::cerr << fmt::format("cellink qemu-args: no cell '{}' in {}; its cells are: {}\n", cell,
                             config->source, known);
    return 1;
  }
  std::string arguments = inmate ? inmate_machine_words(*inmate) : std::string{};
  const bool machine_only = !arguments.empty();
  for (const hypervisor::LinkConfig& link : config->links) {
    if (link.peer_id(cell) < 0) continue;
    if (!link_filter.empty() && link.name != link_filter) continue;
    const std::string id = "cellink-" + link.name;
    const std::filesystem::path socket = runtime_dir / link.name / (cell + ".sock");
    arguments += fmt::format(
        "{}-chardev socket,path={},id={} -device ivshmem-doorbell,chardev={},vectors={}",
        arguments.empty() ? "" : " ", socket.string(), id, id, link.vectors);
  }
  if (arguments.empty() || (machine_only && arguments == inmate_machine_words(*inmate))) {
    std::cerr << fmt::format("cellink qemu-args: cell '{}' is on no link{} in {}\n", cell,
                             link_filter.empty() ? "" : " named '" + link_filter + "'",
                             config->source);
    return 1;
  }
  std::cout << arguments << "\n";
  return 0;
}

}  // namespace cellink::cli

// `cellink bench`: runs cellink_bench (benchmarks/suite/, docs/benchmarks.md)
// with the same arguments. The bench starts `cellink daemon` for its
// cross-process rows; CELLINK_CLI tells it to use this executable.
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <iostream>

#include "commands.hpp"

namespace cellink::cli {

int run_bench(const std::vector<std::string>& arguments) {
  const std::string bench = CELLINK_BENCH_PATH;
  if (::access(bench.c_str(), X_OK) != 0) {
    std::cerr << "cellink bench: " << bench
              << " is not built (cmake --build <build dir> --target cellink_bench)\n";
    return 1;
  }
  std::error_code error;
  const std::filesystem::path self = std::filesystem::read_symlink("/proc/self/exe", error);
  if (!error) ::setenv("CELLINK_CLI", self.c_str(), /*overwrite=*/0);
  std::vector<char*> argv;
  argv.push_back(const_cast<char*>(bench.c_str()));
  for (const std::string& argument : arguments) argv.push_back(const_cast<char*>(argument.c_str()));
  argv.push_back(nullptr);
  std::cout.flush();
  ::execv(bench.c_str(), argv.data());
  std::cerr << "cellink bench: cannot run " << bench << ": " << std::strerror(errno) << "\n";
  return 127;
}

}  // namespace cellink::cli

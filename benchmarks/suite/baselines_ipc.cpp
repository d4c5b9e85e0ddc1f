// The kernel's IPC baselines, between the same two pinned threads as every
// other row: a pipe pair and a UNIX stream socket carrying the same
// payloads (the sender fills the whole payload, the receiver reads it into
// its buffer, reads one word per 64 bytes and checks the sequence number),
// and channel_bench's eventfd ping-pong, which carries no payload.
#include <fcntl.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "../channel_bench.hpp"
#include "../round_trips.hpp"
#include "../streaming.hpp"
#include "cellink/linux-uio/unique_fd.hpp"
#include "copy_buffers.hpp"
#include "suite.hpp"

namespace cellink::bench::suite {
namespace {

using linux_uio::UniqueFd;

// Pipes get the largest buffer an unprivileged process may ask for
// (/proc/sys/fs/pipe-max-size, 1 MiB by default) instead of 64 KiB.
constexpr int kPipeBytes = 1024 * 1024;

void write_all(int fd, const std::byte* bytes, std::size_t size) {
  while (size > 0) {
    const ssize_t written = ::write(fd, bytes, size);
    if (written < 0 && errno == EINTR) continue;
    if (written <= 0) fail("write(%zu bytes): %s", size, std::strerror(errno));
    bytes += written;
    size -= static_cast<std::size_t>(written);
  }
}

void read_all(int fd, std::byte* bytes, std::size_t size) {
  while (size > 0) {
    const ssize_t got = ::read(fd, bytes, size);
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0)
      fail("read(%zu bytes): %s", size, got == 0 ? "end of file" : std::strerror(errno));
    bytes += got;
    size -= static_cast<std::size_t>(got);
  }
}

// The four ends two threads use: A sends on a_send and receives on
// a_receive, B the reverse. A socket uses one descriptor per side for both.
struct Wires {
  UniqueFd a_send, a_receive, b_send, b_receive;
  [[nodiscard]] int a_in() const { return a_receive ? a_receive.get() : a_send.get(); }
  [[nodiscard]] int b_in() const { return b_receive ? b_receive.get() : b_send.get(); }
};

[[nodiscard]] Wires pipes() {
  int forward[2];
  int backward[2];
  if (::pipe2(forward, O_CLOEXEC) != 0 || ::pipe2(backward, O_CLOEXEC) != 0) {
    fail("pipe2: %s", std::strerror(errno));
  }
  for (const int fd : {forward[1], backward[1]}) (void)::fcntl(fd, F_SETPIPE_SZ, kPipeBytes);
  return {UniqueFd(forward[1]), UniqueFd(backward[0]), UniqueFd(backward[1]), UniqueFd(forward[0])};
}

[[nodiscard]] Wires unix_socket() {
  int ends[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, ends) != 0) {
    fail("socketpair: %s", std::strerror(errno));
  }
  return {UniqueFd(ends[0]), UniqueFd(), UniqueFd(ends[1]), UniqueFd()};
}

void send(int fd, CopyBuffers& buffers, std::uint64_t sequence) {
  write_all(fd, buffers.build(sequence), buffers.size());
}

void receive(int fd, CopyBuffers& buffers, std::uint64_t sequence) {
  read_all(fd, buffers.inbox(), buffers.size());
  buffers.check(sequence);
}

[[nodiscard]] Latency stream_rtt(const Settings& settings, const Wires& wires, std::size_t size,
                                 const char* what) {
  CopyBuffers a(size, what);
  CopyBuffers b(size, what);
  Latency latency = round_trips(
      settings,
      [&](std::uint64_t i) {
        send(wires.a_send.get(), a, i);
        receive(wires.a_in(), a, i);
      },
      [&](std::uint64_t i) {
        receive(wires.b_in(), b, i);
        send(wires.b_send.get(), b, i);
      });
  keep(a.sink() + b.sink());
  return latency;
}

[[nodiscard]] double stream_rate(const Settings& settings, const Wires& wires,
                                 const StreamCase& stream, const char* what) {
  CopyBuffers producer(stream.record_size, what);
  CopyBuffers consumer(stream.record_size, what);
  const double rate = bench::stream_rate(
      settings, stream, [&](std::uint64_t i) { send(wires.a_send.get(), producer, i); },
      [&](std::uint64_t i) { receive(wires.b_in(), consumer, i); });
  keep(consumer.sink());
  return rate;
}

template <typename MakeWires>
[[nodiscard]] Runner byte_stream_runner(Transport transport, MakeWires make_wires) {
  Runner runner;
  runner.transport = std::move(transport);
  runner.run = [id = runner.transport.id, make_wires](const Context& context, Mode mode,
                                                      std::uint64_t payload) {
    const Settings rtt = context.rtt_settings(mode, payload);
    const Latency latency = stream_rtt(rtt, make_wires(), payload, id.c_str());
    const StreamCase stream = context.stream_case(payload);
    const std::uint64_t before = involuntary_switches();
    const double rate = stream_rate(context.settings, make_wires(), stream, id.c_str());
    return std::vector<Result>{
        rtt_result(id, mode, payload, latency, rtt),
        throughput_result(id, mode, payload, rate, stream, involuntary_switches() - before)};
  };
  return runner;
}

Runner eventfd_runner() {
  Runner runner;
  runner.transport = {"eventfd",
                      "eventfd ping-pong",
                      Role::baseline,
                      {Mode::block},
                      "two blocking eventfds pass a token, no payload: the cost of one "
                      "kernel wake-up per direction (channel_bench's row)",
                      true,
                      ""};
  runner.run = [](const Context& context, Mode mode, std::uint64_t payload) {
    const std::string id = "eventfd";
    std::vector<Result> results;
    if (payload != 8) {
      results.push_back(unavailable(id, mode, Measure::rtt, payload, Status::not_applicable,
                                    "an eventfd carries an 8-byte counter, no payload"));
    } else {
      const Settings rtt = context.rtt_settings(mode, payload);
      results.push_back(rtt_result(id, mode, payload, eventfd_rtt(rtt, false), rtt));
    }
    results.push_back(unavailable(id, mode, Measure::throughput, payload, Status::not_applicable,
                                  "a counter, not a queue: writes coalesce"));
    return results;
  };
  return runner;
}

}  // namespace

std::vector<Runner> ipc_runners() {
  return {byte_stream_runner({"pipe",
                              "pipe",
                              Role::baseline,
                              {Mode::block},
                              "two pipes (1 MiB buffers): write() the message, the other "
                              "thread read()s all of it (blocking)",
                              true,
                              ""},
                             pipes),
          byte_stream_runner({"unix-socket",
                              "UNIX stream socket",
                              Role::baseline,
                              {Mode::block},
                              "a socketpair(AF_UNIX, SOCK_STREAM): write() the message, the "
                              "other thread read()s all of it (blocking)",
                              true,
                              ""},
                             unix_socket),
          eventfd_runner()};
}

}  // namespace cellink::bench::suite

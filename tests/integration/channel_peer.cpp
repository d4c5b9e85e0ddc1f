// cellink-test-channel-peer: one cell that streams verifiable messages over
// Session channels, for the integration tests (channel_test.cpp).
//
//   cellink-test-channel-peer stream-send    COMMON --channels N --count M [--state-file F]
//   cellink-test-channel-peer stream-receive COMMON --channels N --count M [--slow-us U] [--resume]
//   cellink-test-channel-peer mesh           COMMON --count K
//   COMMON: --runtime-dir D --link L --cell C --seed S [--max-size B]
//
// The streams: channel "stream-<c>" carries messages 0..M-1, one thread per
// channel on each side. Message n of stream c is a pure function of (seed, c,
// n): its size (8 B up to --max-size, default 4 x max_record_payload(), so
// some are fragmented) and its bytes. Its first 8 bytes hold n, little-endian,
// so the receiver checks both order and content. In `mesh`, every cell sends
// K messages on channel "mesh" to every other peer (stream from * 16 + to)
// and checks the K it receives from each.
//
// Output, one line per event, flushed:
//   ready id=<id> peers=<n> epoch=<e> max_record=<bytes>    attached, channels open
//   resume seq=<n>                          sender: the first message of this run
//   reset sent=<x> delivered=<y> resume=<n> t=<ns>          sender saw peer_reset
//   first <c> <n> / progress <c> <n>        receiver: first message of this run,
//                                           then every message n % 1000 == 999
//   peer_reset <c> t=<ns>                   receiver saw peer_reset
//   received <peer> <K>                     mesh: every message from that peer
//   done [waits=<n>]                        waits: sends that found the ring full
//   error <what>                            then exit 1 (2: cannot connect)
// t= is CLOCK_MONOTONIC in ns, the clock the test reads when it kills a peer.
// A receiver answers "ack" on each channel once all M arrived, and the sender
// prints done only when every ack came back. After done a peer waits for EOF
// on stdin, so its leaving never resets a peer that is still working.
//
// Resets (stream-send): delivered counts the pair's messages over all
// channels, so only --channels 1 can resume exactly; with more channels a
// reset is an error. The sender resends from base + delivered, base being the
// first message of the ended session. --state-file keeps base across
// restarts: a new run resumes at base + delivered_from_previous_run(). The
// receiver keeps the count of one previous session only, so a sender killed
// after connecting but before printing `resume` loses its predecessor's
// count: the tests kill only after `resume`.
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <bit>
#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <filesystem>
#include <fstream>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include <CLI/CLI.hpp>

#include "cellink/linux-uio/session.hpp"

namespace {

using cellink::linux_uio::Channel;
using cellink::linux_uio::Message;
using cellink::linux_uio::MessageErrc;
using cellink::linux_uio::ResetReport;
using cellink::linux_uio::Session;

static_assert(std::endian::native == std::endian::little, "messages carry n little-endian");

// A backstop for any one blocking call; the tests time out well before.
constexpr std::chrono::seconds kStallTimeout{60};
constexpr std::uint64_t kProgressInterval = 1000;
constexpr std::size_t kSequenceBytes = sizeof(std::uint64_t);
constexpr std::uint32_t kMeshStreamsPerPeer = 16;

std::mutex output_mutex;  // keeps lines from several threads whole

void print_line(const std::string& line) {
  const std::lock_guard lock(output_mutex);
  std::fwrite(line.data(), 1, line.size(), stdout);
  std::fputc('\n', stdout);
  std::fflush(stdout);
}

[[noreturn]] void fail(const std::string& what) {
  print_line("error " + what);
  std::_Exit(1);  // other threads may be blocked in the Session: skip the destructors
}

std::uint64_t monotonic_ns() {
  timespec now{};
  ::clock_gettime(CLOCK_MONOTONIC, &now);
  return static_cast<std::uint64_t>(now.tv_sec) * 1'000'000'000U +
         static_cast<std::uint64_t>(now.tv_nsec);
}

// splitmix64's finaliser: every output bit depends on every input bit.
constexpr std::uint64_t mix(std::uint64_t value) {
  value = (value ^ (value >> 30)) * 0xbf58476d1ce4e5b9ULL;
  value = (value ^ (value >> 27)) * 0x94d049bb133111ebULL;
  return value ^ (value >> 31);
}
constexpr std::uint64_t kGolden = 0x9e3779b97f4a7c15ULL;

// What message n of a stream looks like; both sides compute it.
class StreamFormat {
 public:
  StreamFormat(std::uint64_t seed, std::size_t max_record, std::size_t max_size)
      : seed_(seed), max_record_(max_record), max_size_(max_size) {}

  [[nodiscard]] std::size_t max_size() const { return max_size_; }

  // 90% tiny, 9% up to one record, 1% fragmented: fragmentation is exercised
  // often while the bulk of a million messages stays cheap to check.
  [[nodiscard]] std::size_t size(std::uint32_t stream, std::uint64_t n) const {
    const std::uint64_t key = message_key(stream, n);
    const std::uint64_t bucket = key % 100;
    std::size_t low = kSequenceBytes;
    std::size_t high = std::min<std::size_t>(64, max_size_);
    if (bucket >= 99) {
      low = std::min(max_record_ + 1, max_size_);
      high = max_size_;
    } else if (bucket >= 90) {
      high = std::min(max_record_, max_size_);
    }
    return low + static_cast<std::size_t>((key >> 8) % (high - low + 1));
  }

  // Writes message n into `out` (exactly size(stream, n) bytes).
  void fill(std::uint32_t stream, std::uint64_t n, std::span<std::byte> out) const {
    std::memcpy(out.data(), &n, kSequenceBytes);
    std::uint64_t state = message_key(stream, n);
    std::size_t offset = kSequenceBytes;
    for (; offset + 8 <= out.size(); offset += 8) {
      const std::uint64_t word = mix(state += kGolden);
      std::memcpy(out.data() + offset, &word, 8);
    }
    const std::uint64_t word = mix(state += kGolden);
    std::memcpy(out.data() + offset, &word, out.size() - offset);
  }

 private:
  [[nodiscard]] std::uint64_t message_key(std::uint32_t stream, std::uint64_t n) const {
    return mix(seed_ ^ mix(stream + kGolden) ^ mix(n * kGolden + 1));
  }

  std::uint64_t seed_;
  std::size_t max_record_;
  std::size_t max_size_;
};

struct Options {
  std::string runtime_dir;
  std::string link;
  std::string cell;
  unsigned channels = 1;
  std::uint64_t count = 0;
  std::uint64_t seed = 0;
  std::size_t max_size = 0;  // 0: 4 x max_record_payload()
  std::string state_file;
  unsigned slow_us = 0;
  bool resume = false;
};

std::string channel_name(unsigned channel) {
  return "stream-" + std::to_string(channel);
}

// Checks message `message` of `stream` against the format; returns its n.
// `expected`: the n it must carry, when known.
std::uint64_t verify(const StreamFormat& format, std::uint32_t stream, const Message& message,
                     std::optional<std::uint64_t> expected, std::vector<std::byte>& scratch) {
  const std::span<const std::byte> bytes = message.payload();
  const std::string where = "stream " + std::to_string(stream) + ": ";
  if (bytes.size() < kSequenceBytes) {
    fail(where + "a " + std::to_string(bytes.size()) + "-byte message has no sequence number");
  }
  std::uint64_t n = 0;
  std::memcpy(&n, bytes.data(), kSequenceBytes);
  if (expected && n != *expected) {
    fail(where + "expected message " + std::to_string(*expected) + " (" +
         std::to_string(format.size(stream, *expected)) + " bytes), got a " +
         std::to_string(bytes.size()) + "-byte message numbered " + std::to_string(n));
  }
  const std::size_t size = format.size(stream, n);
  if (bytes.size() != size) {
    fail(where + "message " + std::to_string(n) + " has " + std::to_string(bytes.size()) +
         " bytes, expected " + std::to_string(size));
  }
  scratch.resize(size);
  format.fill(stream, n, scratch);
  if (std::memcmp(scratch.data(), bytes.data(), size) != 0) {
    const auto mismatch = std::mismatch(scratch.begin(), scratch.end(), bytes.begin());
    fail(where + "message " + std::to_string(n) + " differs at byte " +
         std::to_string(mismatch.first - scratch.begin()) + " of " + std::to_string(size));
  }
  return n;
}

// Blocks until EOF on stdin: the test decides when this cell leaves.
void wait_for_stdin_eof() {
  char bytes[256];
  for (;;) {
    const ssize_t got = ::read(STDIN_FILENO, bytes, sizeof(bytes));
    if (got == 0 || (got < 0 && errno != EINTR)) return;
  }
}

void check(std::error_code error, const std::string& what) {
  if (error) fail(what + ": " + error.message());
}

class StreamSender {
 public:
  StreamSender(Session& session, const Options& options, const StreamFormat& format)
      : session_(session), options_(options), format_(format), peer_(session.only_peer()) {}

  void run(std::vector<Channel>& channels) {
    if (!options_.state_file.empty() && options_.channels != 1) {
      fail("--state-file needs --channels 1: delivered counts the pair, not a channel");
    }
    check(session_.wait_for_peer(peer_, kStallTimeout), "waiting for the receiver");
    base_ = first_message();
    if (base_ > options_.count) {
      fail("resume point " + std::to_string(base_) + " is past --count " +
           std::to_string(options_.count));
    }
    persist_base();
    print_line("resume seq=" + std::to_string(base_));
    std::vector<std::thread> threads;
    for (unsigned c = 0; c < channels.size(); ++c) {
      threads.emplace_back([this, c, &channels] { send_stream(c, channels[c]); });
    }
    for (std::thread& thread : threads) thread.join();
    print_line("done waits=" + std::to_string(waits_.load()));
  }

 private:
  // Where this run starts: after what the previous run got delivered.
  std::uint64_t first_message() {
    if (options_.state_file.empty() || !std::filesystem::exists(options_.state_file)) return 0;
    std::ifstream file(options_.state_file);
    std::uint64_t previous_base = 0;
    if (!(file >> previous_base)) fail("state file " + options_.state_file + " is unreadable");
    const std::optional<std::uint64_t> delivered = session_.delivered_from_previous_run(peer_);
    if (!delivered) {
      fail("state file " + options_.state_file + " says a previous run sent from " +
           std::to_string(previous_base) + ", but the receiver no longer knows what it delivered");
    }
    return previous_base + *delivered;
  }

  // Written whole (rename), so a kill -9 leaves the old or the new base.
  void persist_base() {
    if (options_.state_file.empty()) return;
    const std::string temporary = options_.state_file + ".tmp";
    {
      std::ofstream file(temporary, std::ios::trunc);
      file << base_ << '\n';
      if (!file.flush()) fail("cannot write " + temporary);
    }
    std::error_code error;
    std::filesystem::rename(temporary, options_.state_file, error);
    check(error, "renaming " + temporary);
  }

  void send_stream(unsigned c, Channel& channel) {
    check(channel.wait_connected(kStallTimeout), channel_name(c) + ": waiting for the receiver");
    std::uint64_t next = base_;
    std::vector<std::byte> buffer(format_.max_size());
    for (;;) {
      std::error_code error;
      if (next < options_.count) {
        const std::span<std::byte> message{buffer.data(), format_.size(c, next)};
        format_.fill(c, next, message);
        error = send(channel, message);
        if (!error) {
          ++next;
          continue;
        }
      } else {
        const Message ack = channel.receive(kStallTimeout);
        if (ack) {
          const auto text = ack.payload();
          if (text.size() != 3 || std::memcmp(text.data(), "ack", 3) != 0) {
            fail(channel_name(c) + ": expected the receiver's ack");
          }
          return;
        }
        error = ack.error();
      }
      if (error != MessageErrc::peer_reset) {
        fail(channel_name(c) + ": message " + std::to_string(next) + ": " + error.message());
      }
      if (const std::optional<std::uint64_t> resume = handle_reset(monotonic_ns(), next)) {
        next = *resume;
      }
    }
  }

  // Tries without blocking first, to count the sends that meet a full ring.
  std::error_code send(Channel& channel, std::span<const std::byte> message) {
    if (message.size() <= session_.max_record_payload()) {
      const std::error_code error = channel.send(message, cellink::linux_uio::kNoWait);
      if (error == MessageErrc::would_block) {
        waits_.fetch_add(1, std::memory_order_relaxed);
      } else if (error != MessageErrc::not_connected) {
        return error;
      }
    }
    return channel.send(message, kStallTimeout);
  }

  // The resume point after a reset, or nullopt when this reset was already
  // handled (each channel reports a reset to its send and receive sides).
  std::optional<std::uint64_t> handle_reset(std::uint64_t seen_at_ns, std::uint64_t next_unsent) {
    const std::lock_guard lock(reset_mutex_);
    const ResetReport report = session_.last_reset(peer_);
    if (report.resets <= handled_resets_) return std::nullopt;
    if (report.resets > handled_resets_ + 1) {
      fail("missed a reset: " + std::to_string(report.resets - handled_resets_) +
           " resets since the last one handled, so the resume point is unknown");
    }
    handled_resets_ = report.resets;
    if (options_.channels != 1) {
      fail("peer reset with " + std::to_string(options_.channels) +
           " channels: delivered counts the pair, so no channel's resume point is known");
    }
    if (!report.delivered_known || report.delivered > report.sent) {
      fail("reset report unusable: sent=" + std::to_string(report.sent) +
           " delivered=" + (report.delivered_known ? std::to_string(report.delivered) : "unknown"));
    }
    // One channel: the ended session carried exactly the messages from base_
    // up to next_unsent (delivered <= sent was checked above).
    if (report.sent != next_unsent - base_) {
      fail("reset report says sent=" + std::to_string(report.sent) + ", but the session sent " +
           std::to_string(next_unsent - base_) + " messages from " + std::to_string(base_));
    }
    const std::uint64_t resume = base_ + report.delivered;
    base_ = resume;
    persist_base();
    print_line("reset sent=" + std::to_string(report.sent) +
               " delivered=" + std::to_string(report.delivered) +
               " resume=" + std::to_string(resume) + " t=" + std::to_string(seen_at_ns));
    return resume;
  }

  Session& session_;
  const Options& options_;
  const StreamFormat& format_;
  std::uint32_t peer_;
  std::atomic<std::uint64_t> waits_{0};
  std::mutex reset_mutex_;  // guards the two below: one reset is handled once
  std::uint64_t handled_resets_ = 0;
  std::uint64_t base_ = 0;  // the first message of the current session
};

void receive_stream(const Options& options, const StreamFormat& format, unsigned c,
                    Channel& channel) {
  std::optional<std::uint64_t> expected;
  if (!options.resume) expected = 0;
  std::vector<std::byte> scratch;
  while (!expected || *expected < options.count) {
    Message message = channel.receive(kStallTimeout);
    if (!message) {
      if (message.error() != MessageErrc::peer_reset) {
        check(message.error(), channel_name(c) + ": waiting for message " +
                                   (expected ? std::to_string(*expected) : "any"));
      }
      print_line("peer_reset " + std::to_string(c) + " t=" + std::to_string(monotonic_ns()));
      continue;
    }
    const bool first = !expected || *expected == 0;
    const std::uint64_t n = verify(format, c, message, expected, scratch);
    if (n >= options.count) fail(channel_name(c) + ": message " + std::to_string(n) + " >= count");
    // Released only once checked: the delivery count never covers a message
    // this run did not see whole.
    message.release();
    if (first) print_line("first " + std::to_string(c) + " " + std::to_string(n));
    if (n % kProgressInterval == kProgressInterval - 1) {
      print_line("progress " + std::to_string(c) + " " + std::to_string(n));
    }
    expected = n + 1;
    if (options.slow_us != 0) {
      std::this_thread::sleep_for(std::chrono::microseconds(options.slow_us));
    }
  }
  // A sender restarted meanwhile waits for the ack too: send it again.
  for (;;) {
    const std::error_code error = channel.send("ack", kStallTimeout);
    if (error != MessageErrc::peer_reset) {
      check(error, channel_name(c) + ": sending the ack");
      return;
    }
  }
}

void run_mesh(Session& session, const Options& options, const StreamFormat& format) {
  const std::uint32_t self = session.id();
  std::vector<Channel> channels(session.peer_count());
  for (std::uint32_t peer = 0; peer < session.peer_count(); ++peer) {
    if (peer != self) channels[peer] = session.open("mesh", peer);
  }
  print_line("ready id=" + std::to_string(self) + " peers=" + std::to_string(session.peer_count()) +
             " epoch=" + std::to_string(session.epoch()) +
             " max_record=" + std::to_string(session.max_record_payload()));
  std::vector<std::thread> threads;
  for (std::uint32_t peer = 0; peer < session.peer_count(); ++peer) {
    if (peer == self) continue;
    Channel& channel = channels[peer];
    threads.emplace_back([&, peer] {
      const std::uint32_t stream = self * kMeshStreamsPerPeer + peer;
      std::vector<std::byte> buffer(format.max_size());
      for (std::uint64_t n = 0; n < options.count; ++n) {
        const std::span<std::byte> message{buffer.data(), format.size(stream, n)};
        format.fill(stream, n, message);
        check(channel.send(message, kStallTimeout),
              "mesh to peer " + std::to_string(peer) + ": message " + std::to_string(n));
      }
    });
    threads.emplace_back([&, peer] {
      const std::uint32_t stream = peer * kMeshStreamsPerPeer + self;
      std::vector<std::byte> scratch;
      for (std::uint64_t n = 0; n < options.count; ++n) {
        const Message message = channel.receive(kStallTimeout);
        check(message.error(),
              "mesh from peer " + std::to_string(peer) + ": message " + std::to_string(n));
        (void)verify(format, stream, message, n, scratch);
      }
      print_line("received " + std::to_string(peer) + " " + std::to_string(options.count));
    });
  }
  for (std::thread& thread : threads) thread.join();
  print_line("done");
}

int run(const std::string& mode, const Options& options) {
  std::unique_ptr<Session> session;
  try {
    session = Session::connect(
        {.runtime_dir = options.runtime_dir, .link = options.link, .cell = options.cell});
  } catch (const std::exception& failure) {
    print_line(std::string("error connect: ") + failure.what());
    return 2;
  }
  const std::size_t max_record = session->max_record_payload();
  const std::size_t max_size = options.max_size != 0 ? options.max_size : 4 * max_record;
  if (max_size < kSequenceBytes) fail("--max-size must be at least 8");
  const StreamFormat format(options.seed, max_record, max_size);
  if (mode == "mesh") {
    run_mesh(*session, options, format);
  } else {
    std::vector<Channel> channels;
    for (unsigned c = 0; c < options.channels; ++c) {
      channels.push_back(session->open(channel_name(c)));
    }
    print_line("ready id=" + std::to_string(session->id()) +
               " peers=" + std::to_string(session->peer_count()) + " epoch=" +
               std::to_string(session->epoch()) + " max_record=" + std::to_string(max_record));
    if (mode == "stream-send") {
      StreamSender(*session, options, format).run(channels);
    } else {
      std::vector<std::thread> threads;
      for (unsigned c = 0; c < channels.size(); ++c) {
        threads.emplace_back([&, c] { receive_stream(options, format, c, channels[c]); });
      }
      for (std::thread& thread : threads) thread.join();
      print_line("done");
    }
  }
  wait_for_stdin_eof();
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  CLI::App app{"cellink-test-channel-peer: a cell that streams verifiable messages"};
  app.require_subcommand(1);
  Options options;
  const auto add_common = [&](CLI::App* mode) {
    mode->add_option("--runtime-dir", options.runtime_dir, "The daemon's runtime directory")
        ->required();
    mode->add_option("--link", options.link, "Link name")->required();
    mode->add_option("--cell", options.cell, "This cell's name")->required();
    mode->add_option("--seed", options.seed, "Seed of the message contents")->required();
    mode->add_option("--max-size", options.max_size,
                     "Largest message (default: 4 x one record's payload)");
  };
  CLI::App* send = app.add_subcommand("stream-send", "Send M messages on each of N channels");
  CLI::App* receive = app.add_subcommand("stream-receive", "Receive and check the streams");
  CLI::App* mesh = app.add_subcommand("mesh", "Exchange K messages with every other peer");
  for (CLI::App* mode : {send, receive}) {
    add_common(mode);
    mode->add_option("--channels", options.channels, "Channels stream-0..stream-{N-1}")
        ->check(CLI::Range(1, 64));
    mode->add_option("--count", options.count, "Messages per channel")->required();
  }
  send->add_option("--state-file", options.state_file, "Resume point kept across restarts");
  receive->add_option("--slow-us", options.slow_us, "Sleep per message (back-pressure)");
  receive->add_flag("--resume", options.resume, "Accept any first message (a restarted receiver)");
  add_common(mesh);
  mesh->add_option("--count", options.count, "Messages to each peer")->required();
  CLI11_PARSE(app, argc, argv);

  const std::string mode = send->parsed()      ? "stream-send"
                           : receive->parsed() ? "stream-receive"
                                               : "mesh";
  try {
    return run(mode, options);
  } catch (const std::exception& failure) {
    fail(failure.what());
  }
}

// The daemon's side of QEMU's ivshmem-server protocol, checked message by
// message with raw clients on a 4-cell link with 3 vectors.
#include <sys/mman.h>
#include <sys/stat.h>

#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "cellink/ivshmem/link_descriptor.hpp"
#include "fixture.hpp"
#include "raw_client.hpp"

namespace cellink::integration {
namespace {

constexpr unsigned kVectors = 3;
constexpr const char* kEventfd = "anon_inode:[eventfd]";

class ProtocolTest : public IntegrationTest {
 protected:
  void SetUp() override {
    start_daemon(write_config(link_config("bus", {"c0", "c1", "c2", "c3"}, kVectors)));
  }

  // Connects as cell c<id> without reading anything.
  std::unique_ptr<RawClient> connect(unsigned id) {
    return std::make_unique<RawClient>(runtime_dir() / "bus" /
                                       ("c" + std::to_string(id) + ".sock"));
  }

  // Connects as cell c<id> and reads the whole greeting.
  std::unique_ptr<RawClient> attach(unsigned id, RawClient::Greeting* greeting = nullptr) {
    auto client = connect(id);
    RawClient::Greeting received = client->receive_greeting(kVectors);
    if (greeting != nullptr) *greeting = std::move(received);
    return client;
  }
};

// One message as "<id>" or "<id>+fd", so sequences read well in failures.
std::string describe(const RawClient::Received& message) {
  if (message.closed) return "closed";
  return std::to_string(message.value) + (message.fd ? "+fd" : "");
}

std::vector<std::string> receive_described(RawClient& client, unsigned count) {
  std::vector<std::string> seen;
  for (unsigned i = 0; i < count; ++i) seen.push_back(describe(client.receive()));
  return seen;
}

std::vector<std::string> repeated(const std::string& text, unsigned count) {
  return std::vector<std::string>(count, text);
}

std::vector<std::string> operator+(std::vector<std::string> a, const std::vector<std::string>& b) {
  a.insert(a.end(), b.begin(), b.end());
  return a;
}

TEST_F(ProtocolTest, GreetingStartsWithVersionZeroThenTheIdThenTheMemoryFd) {
  RawClient::Greeting greeting;
  auto client = attach(1, &greeting);

  EXPECT_EQ(describe(greeting.version), "0");
  EXPECT_EQ(describe(greeting.id), "1");
  EXPECT_EQ(describe(greeting.memory), "-1+fd");
}

TEST_F(ProtocolTest, PeerIdIsTheCellsIndexNotTheConnectionOrder) {
  std::vector<std::unique_ptr<RawClient>> clients;
  for (const unsigned cell : {2U, 0U, 3U, 1U}) {
    RawClient::Greeting greeting;
    clients.push_back(attach(cell, &greeting));
    EXPECT_EQ(greeting.id.value, cell) << "cell c" << cell;
  }
}

TEST_F(ProtocolTest, SharedMemoryIsAPowerOfTwoMemfdWithAValidLinkDescriptor) {
  RawClient::Greeting greeting;
  auto client = attach(2, &greeting);
  const int memory = greeting.memory.fd.get();

  struct stat info {};
  ASSERT_EQ(::fstat(memory, &info), 0);
  EXPECT_TRUE(S_ISREG(info.st_mode));
  const auto size = static_cast<std::uint64_t>(info.st_size);
  EXPECT_TRUE(ivshmem::is_power_of_two(size)) << size << " bytes";
  EXPECT_TRUE(fd_target(memory).starts_with("/memfd:")) << fd_target(memory);

  void* mapped = ::mmap(nullptr, size, PROT_READ, MAP_SHARED, memory, 0);
  ASSERT_NE(mapped, MAP_FAILED);
  ivshmem::LinkDescriptor descriptor{};
  std::memcpy(&descriptor, static_cast<const std::byte*>(mapped) + ivshmem::kLinkDescriptorOffset,
              sizeof(descriptor));
  ::munmap(mapped, size);
  ivshmem::Layout layout;
  ASSERT_EQ(ivshmem::validate(descriptor, size, layout), ivshmem::DescriptorError::ok);
  EXPECT_EQ(descriptor.peers, 4U);
  EXPECT_EQ(descriptor.vectors, kVectors);
  EXPECT_STREQ(descriptor.name, "bus");
  EXPECT_EQ(layout.memory_size(), size);
}

TEST_F(ProtocolTest, GreetingHandsOverEachPresentPeersEventfdsInIdOrderThenTheClientsOwn) {
  auto c2 = attach(2);
  auto c0 = attach(0);

  RawClient::Greeting greeting;
  auto c3 = attach(3, &greeting);

  std::vector<std::string> seen;
  for (const RawClient::Received& message : greeting.eventfds) {
    seen.push_back(describe(message));
    EXPECT_EQ(fd_target(message.fd.get()), kEventfd) << "message " << message.value;
  }
  EXPECT_EQ(seen, repeated("0+fd", 3) + repeated("2+fd", 3) + repeated("3+fd", 3));
  // Nothing else came after the greeting: the next message is c1's join.
  auto c1 = attach(1);
  EXPECT_EQ(receive_described(*c3, 3), repeated("1+fd", 3));
}

TEST_F(ProtocolTest, EventfdsHandedOutForAPeerInterruptThatPeerOnThatVector) {
  RawClient::Greeting first;
  auto c0 = attach(0, &first);
  RawClient::Greeting second;
  auto c1 = attach(1, &second);
  std::vector<RawClient::Received> joins;  // c1's eventfds, as c0 was told of its join
  for (unsigned vector = 0; vector < kVectors; ++vector) joins.push_back(c0->expect_message());

  for (unsigned vector = 0; vector < kVectors; ++vector) {
    SCOPED_TRACE("vector " + std::to_string(vector));
    ring_eventfd(second.eventfds[vector].fd.get());  // c1 rings c0
    EXPECT_EQ(await_eventfd(first.eventfds[vector].fd.get()), 1U);
    ring_eventfd(joins[vector].fd.get());  // c0 rings c1
    EXPECT_EQ(await_eventfd(second.eventfds[kVectors + vector].fd.get()), 1U);
    for (unsigned other = 0; other < kVectors; ++other) {
      EXPECT_EQ(drain_eventfd(first.eventfds[other].fd.get()), 0U) << "c0 vector " << other;
      EXPECT_EQ(drain_eventfd(second.eventfds[kVectors + other].fd.get()), 0U)
          << "c1 vector " << other;
    }
  }
}

TEST_F(ProtocolTest, ExistingClientsGetTheJoinersIdOncePerVectorWithAnEventfd) {
  auto c0 = attach(0);
  auto c3 = attach(3);
  EXPECT_EQ(receive_described(*c0, 3), repeated("3+fd", 3));

  auto c2 = attach(2);

  for (RawClient* client : {c0.get(), c3.get()}) {
    std::vector<RawClient::Received> joins;
    for (unsigned vector = 0; vector < kVectors; ++vector) joins.push_back(client->receive());
    std::vector<std::string> seen;
    for (const RawClient::Received& join : joins) {
      seen.push_back(describe(join));
      EXPECT_EQ(fd_target(join.fd.get()), kEventfd);
    }
    EXPECT_EQ(seen, repeated("2+fd", 3)) << client->path();
  }
}

TEST_F(ProtocolTest, OthersGetExactlyOneLeaveWithoutAnFdWhenAPeerDisconnects) {
  auto c0 = attach(0);
  auto c1 = attach(1);
  auto c2 = attach(2);
  EXPECT_EQ(receive_described(*c0, 6), repeated("1+fd", 3) + repeated("2+fd", 3));
  EXPECT_EQ(receive_described(*c1, 3), repeated("2+fd", 3));

  c1->close();

  EXPECT_EQ(receive_described(*c0, 1), std::vector<std::string>{"1"});
  EXPECT_EQ(receive_described(*c2, 1), std::vector<std::string>{"1"});
  // Exactly one: the next message is c3's join.
  auto c3 = attach(3);
  EXPECT_EQ(receive_described(*c0, 3), repeated("3+fd", 3));
  EXPECT_EQ(receive_described(*c2, 3), repeated("3+fd", 3));
}

TEST_F(ProtocolTest, DisconnectRingsVectorZeroOnceOnEverySurvivor) {
  RawClient::Greeting greeting0;
  auto c0 = attach(0, &greeting0);
  RawClient::Greeting greeting2;
  auto c2 = attach(2, &greeting2);
  auto c3 = attach(3);
  const int c0_vector0 = greeting0.eventfds[0].fd.get();         // c0 was alone: own fds first
  const int c2_vector0 = greeting2.eventfds[kVectors].fd.get();  // after c0's three

  c3->close();

  EXPECT_EQ(await_eventfd(c0_vector0), 1U);
  EXPECT_EQ(await_eventfd(c2_vector0), 1U);
}

TEST_F(ProtocolTest, JoinAndLeaveNotificationsArriveInTheOrderTheyHappened) {
  auto observer = attach(2);
  std::vector<std::string> seen;
  auto record = [&](unsigned count) {
    for (const std::string& message : receive_described(*observer, count)) seen.push_back(message);
  };

  auto c0 = attach(0);
  record(3);
  auto c3 = attach(3);
  record(3);
  c0->close();
  record(1);  // before the next step: the daemon notices a hang-up asynchronously
  RawClient::Greeting late;
  auto c1 = attach(1, &late);
  record(3);
  c3->close();
  record(1);
  c0 = attach(0);
  record(3);
  c1->close();
  record(1);

  EXPECT_EQ(seen, repeated("0+fd", 3) + repeated("3+fd", 3) + std::vector<std::string>{"0"} +
                      repeated("1+fd", 3) + std::vector<std::string>{"3"} + repeated("0+fd", 3) +
                      std::vector<std::string>{"1"});
  std::vector<std::string> late_greeting;
  for (const RawClient::Received& message : late.eventfds) {
    late_greeting.push_back(describe(message));
  }
  EXPECT_EQ(late_greeting, repeated("2+fd", 3) + repeated("3+fd", 3) + repeated("1+fd", 3));
}

}  // namespace
}  // namespace cellink::integration

// ConsoleScrollback: the bound, the order, against a reference.
#include "cellink/hypervisor/console_scrollback.hpp"

#include <random>
#include <string>
#include <string_view>

#include <gtest/gtest.h>

namespace cellink::hypervisor {
namespace {

std::span<const std::byte> bytes_of(std::string_view text) {
  return std::as_bytes(std::span(text.data(), text.size()));
}

TEST(ConsoleScrollback, KeepsOnlyTheNewestBytesUpToItsCapacity) {
  ConsoleScrollback scrollback(16);
  scrollback.append(bytes_of("0123456789"));
  EXPECT_EQ(scrollback.contents(), "0123456789");
  scrollback.append(bytes_of("abcdefghij"));
  EXPECT_EQ(scrollback.contents(), "456789abcdefghij");
  EXPECT_EQ(scrollback.size(), 16u);
  EXPECT_EQ(scrollback.total(), 20u);
  scrollback.append(bytes_of(std::string(40, 'z') + "END"));
  EXPECT_EQ(scrollback.contents(), std::string(13, 'z') + "END");
}

TEST(ConsoleScrollback, MatchesAReferenceOverRandomAppends) {
  for (unsigned seed = 1; seed <= 50; ++seed) {
    std::mt19937 random(seed);
    const std::size_t capacity = 1 + random() % 300;
    ConsoleScrollback scrollback(capacity);
    std::string reference;
    for (int step = 0; step < 200; ++step) {
      std::string chunk(random() % 100, '\0');
      for (char& c : chunk) c = static_cast<char>('a' + random() % 26);
      scrollback.append(bytes_of(chunk));
      reference += chunk;
      const std::string expected =
          reference.size() > capacity ? reference.substr(reference.size() - capacity) : reference;
      ASSERT_EQ(scrollback.contents(), expected) << "seed " << seed << " step " << step;
    }
  }
}

TEST(ConsoleScrollback, ZeroCapacityKeepsNothing) {
  ConsoleScrollback scrollback(0);
  scrollback.append(bytes_of("gone"));
  EXPECT_EQ(scrollback.contents(), "");
  EXPECT_EQ(scrollback.total(), 4u);
}

}  // namespace
}  // namespace cellink::hypervisor

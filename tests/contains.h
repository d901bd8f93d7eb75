// Contains: a substring check for tests with a readable failure message (gmock is not linked).
#pragma once

#include <gtest/gtest.h>

#include <string>

namespace tally {

inline ::testing::AssertionResult Contains(const std::string& text, const std::string& part) {
  if (text.find(part) != std::string::npos) return ::testing::AssertionSuccess();
  return ::testing::AssertionFailure() << "\"" << text << "\" does not contain \"" << part << "\"";
}

}  // namespace tally

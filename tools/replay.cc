// tally-replay: reads a round's capture back. Thin: arguments, then tools/replay_lib.
#include <iostream>
#include <string>
#include <vector>

#include "tools/replay_lib.h"

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  for (const std::string& a : args) {
    if (a == "--help" || a == "-h") {
      std::cout << tally::replay::kUsage;
      return 0;
    }
  }
  auto options = tally::replay::ParseArgs(args);
  if (!options.ok()) {
    std::cerr << "tally-replay: " << options.message() << "\n" << tally::replay::kUsage;
    return 2;
  }
  return tally::replay::Run(options.value(), std::cout, std::cerr);
}

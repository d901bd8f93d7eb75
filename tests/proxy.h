// A TCP forwarder on loopback for process tests: what stands between a node and the broker on
// a real network. Every connection accepted on endpoint() is forwarded to `upstream`, each
// byte held back `delay` in each direction (a slow link: a one-way delay, not a bandwidth
// limit). The first `drop_first` connections are closed as soon as they are accepted, as a
// forwarder or load balancer does while its upstream is not there (a broker restarting).
//
// One thread, one poll loop; every wait is bounded by the next byte's release time. The proxy
// never reads the bytes it forwards (CURVE sessions are end to end). Thread-safe accessors.
#pragma once

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

namespace tally::test {

class TcpProxy {
 public:
  // `upstream`: tcp://127.0.0.1:PORT.
  TcpProxy(const std::string& upstream, std::chrono::milliseconds delay, size_t drop_first = 0);
  ~TcpProxy();
  TcpProxy(const TcpProxy&) = delete;
  TcpProxy& operator=(const TcpProxy&) = delete;

  std::string endpoint() const { return "tcp://127.0.0.1:" + std::to_string(port_); }
  // Connections closed at once so far, and connections forwarded so far.
  size_t dropped();
  size_t forwarded();
  // True once `n` connections have been dropped (waits up to `timeout`).
  bool WaitDropped(size_t n, std::chrono::milliseconds timeout);

 private:
  using Clock = std::chrono::steady_clock;
  struct Chunk {
    Clock::time_point due;
    std::vector<uint8_t> bytes;
  };
  struct Direction {
    int from = -1, to = -1;
    std::deque<Chunk> queue;
    bool eof = false;  // `from` ended: pass the end on once the queue is empty
    bool done = false;
  };
  struct Pair {
    Direction d[2];
  };
  void Run();

  uint16_t upstream_port_;
  std::chrono::milliseconds delay_;
  size_t drop_first_;
  int listen_ = -1;
  int wake_[2] = {-1, -1};
  uint16_t port_ = 0;
  std::mutex mu_;
  std::condition_variable cv_;
  size_t dropped_ = 0, forwarded_ = 0;
  std::thread thread_;
};

}  // namespace tally::test

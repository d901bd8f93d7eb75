#include "tests/proxy.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>

namespace tally::test {
namespace {

sockaddr_in Loopback(uint16_t port) {
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  a.sin_port = htons(port);
  return a;
}

}  // namespace

TcpProxy::TcpProxy(const std::string& upstream, std::chrono::milliseconds delay, size_t drop_first)
    : upstream_port_(static_cast<uint16_t>(std::stoi(upstream.substr(upstream.rfind(':') + 1)))),
      delay_(delay),
      drop_first_(drop_first) {
  listen_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a = Loopback(0);
  socklen_t len = sizeof a;
  const bool ok = listen_ >= 0 && ::bind(listen_, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0 &&
                  ::listen(listen_, 64) == 0 &&
                  ::getsockname(listen_, reinterpret_cast<sockaddr*>(&a), &len) == 0 &&
                  ::pipe2(wake_, O_CLOEXEC) == 0;
  EXPECT_TRUE(ok) << "proxy set-up failed: " << std::strerror(errno);
  port_ = ntohs(a.sin_port);
  thread_ = std::thread([this] { Run(); });
}

TcpProxy::~TcpProxy() {
  (void)!::write(wake_[1], "x", 1);
  thread_.join();
  for (int fd : {listen_, wake_[0], wake_[1]})
    if (fd >= 0) ::close(fd);
}

size_t TcpProxy::dropped() {
  std::lock_guard<std::mutex> lock(mu_);
  return dropped_;
}

size_t TcpProxy::forwarded() {
  std::lock_guard<std::mutex> lock(mu_);
  return forwarded_;
}

bool TcpProxy::WaitDropped(size_t n, std::chrono::milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  return cv_.wait_for(lock, timeout, [&] { return dropped_ >= n; });
}

void TcpProxy::Run() {
  std::vector<std::unique_ptr<Pair>> pairs;
  for (;;) {
    // Poll: the listener, the wake pipe, and every source whose end has not come; wake for the
    // earliest chunk due.
    std::vector<pollfd> fds = {{listen_, POLLIN, 0}, {wake_[0], POLLIN, 0}};
    std::vector<Direction*> polled;
    auto next_due = Clock::time_point::max();
    for (auto& p : pairs) {
      for (Direction& d : p->d) {
        if (!d.eof) {
          fds.push_back({d.from, POLLIN, 0});
          polled.push_back(&d);
        }
        if (!d.queue.empty()) next_due = std::min(next_due, d.queue.front().due);
      }
    }
    int timeout = -1;
    if (next_due != Clock::time_point::max()) {
      const auto left =
          std::chrono::duration_cast<std::chrono::milliseconds>(next_due - Clock::now()).count();
      timeout = static_cast<int>(std::max<int64_t>(0, left + 1));
    }
    if (::poll(fds.data(), fds.size(), timeout) < 0 && errno != EINTR) return;
    if (fds[1].revents) break;
    if (fds[0].revents & POLLIN) {
      const int in = ::accept4(listen_, nullptr, nullptr, SOCK_CLOEXEC);
      if (in >= 0) {
        std::lock_guard<std::mutex> lock(mu_);
        if (dropped_ < drop_first_) {
          ::close(in);
          ++dropped_;
          cv_.notify_all();
        } else {
          const int out = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
          sockaddr_in up = Loopback(upstream_port_);
          if (out >= 0 && ::connect(out, reinterpret_cast<sockaddr*>(&up), sizeof up) == 0) {
            auto p = std::make_unique<Pair>();
            p->d[0].from = in;
            p->d[0].to = out;
            p->d[1].from = out;
            p->d[1].to = in;
            pairs.push_back(std::move(p));
            ++forwarded_;
          } else {
            ::close(in);
            if (out >= 0) ::close(out);
          }
        }
      }
    }
    for (size_t i = 2; i < fds.size(); ++i) {
      if (!fds[i].revents) continue;
      Direction& d = *polled[i - 2];
      uint8_t buf[65536];
      const ssize_t n = ::recv(d.from, buf, sizeof buf, 0);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        d.eof = true;
        continue;
      }
      d.queue.push_back({Clock::now() + delay_, std::vector<uint8_t>(buf, buf + n)});
    }
    // Release what is due; pass an end on after everything before it.
    const auto now = Clock::now();
    for (auto& p : pairs) {
      for (Direction& d : p->d) {
        while (!d.queue.empty() && d.queue.front().due <= now) {
          const auto& bytes = d.queue.front().bytes;
          size_t sent = 0;
          while (sent < bytes.size()) {
            const ssize_t w = ::send(d.to, bytes.data() + sent, bytes.size() - sent, MSG_NOSIGNAL);
            if (w < 0 && errno == EINTR) continue;
            if (w <= 0) break;
            sent += static_cast<size_t>(w);
          }
          d.queue.pop_front();
        }
        if (d.eof && d.queue.empty() && !d.done) {
          ::shutdown(d.to, SHUT_WR);
          d.done = true;
        }
      }
    }
    // A pair whose both directions have ended is closed.
    std::erase_if(pairs, [](const std::unique_ptr<Pair>& p) {
      if (!(p->d[0].done && p->d[1].done)) return false;
      ::close(p->d[0].from);
      ::close(p->d[1].from);
      return true;
    });
  }
  for (auto& p : pairs) {
    ::close(p->d[0].from);
    ::close(p->d[1].from);
  }
}

}  // namespace tally::test

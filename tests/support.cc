#include "tests/support.h"

#include <gtest/gtest.h>
#include <stdlib.h>

#include <algorithm>
#include <cstring>

#include "schema/results.h"

namespace tally::test {

TempDir::TempDir() {
  std::string pattern = (std::filesystem::temp_directory_path() / "tally-test-XXXXXX").string();
  if (::mkdtemp(pattern.data()) == nullptr) ADD_FAILURE() << "mkdtemp failed";
  path_ = pattern;
}

TempDir::~TempDir() {
  std::error_code ec;
  std::filesystem::remove_all(path_, ec);
}

std::filesystem::path MakeKeys(const std::filesystem::path& dir,
                               const std::vector<std::string>& patients) {
  auto keys = dir / "keys";
  EXPECT_TRUE(GenerateParty(keys, "broker", Role::kBroker, false).ok());
  EXPECT_TRUE(GenerateParty(keys, "hospital", Role::kHospital, false).ok());
  for (const auto& p : patients) {
    auto s = GenerateParty(keys, p, Role::kPatient, false);
    EXPECT_TRUE(s.ok()) << s.message();
  }
  return keys;
}

std::optional<uint64_t> ScalarAggregate(const std::string& json) {
  auto parsed = ParseResultsLine(json);
  if (!parsed.ok() || !parsed->result || parsed->result->aggregate.size() != 1) return std::nullopt;
  return parsed->result->aggregate[0];
}

LogSink LogWatcher::Sink() {
  return [this](const std::string& line) {
    std::lock_guard<std::mutex> lock(mu_);
    lines_.push_back(line);
    cv_.notify_all();
  };
}

bool LogWatcher::WaitFor(const std::string& needle, milliseconds timeout) {
  return WaitForCount(needle, 1, timeout);
}

bool LogWatcher::WaitForCount(const std::string& needle, size_t count, milliseconds timeout) {
  std::unique_lock<std::mutex> lock(mu_);
  return cv_.wait_for(lock, timeout, [&] { return CountLocked(needle) >= count; });
}

size_t LogWatcher::Count(const std::string& needle) {
  std::lock_guard<std::mutex> lock(mu_);
  return CountLocked(needle);
}

size_t LogWatcher::CountLocked(const std::string& needle) const {
  size_t n = 0;
  for (const auto& l : lines_) n += l.find(needle) != std::string::npos;
  return n;
}

std::vector<std::string> LogWatcher::Lines() {
  std::lock_guard<std::mutex> lock(mu_);
  return lines_;
}

SecretCertificate CurveKeys(const PublicKey& public_key, const uint8_t* secret_key) {
  SecretCertificate me;
  me.pub.curve_public = public_key;
  std::memcpy(me.curve_secret.data(), secret_key, me.curve_secret.size());
  return me;
}

SecretCertificate StrangerKeys() {
  PublicKey pub;
  SecretKey sec;
  EXPECT_EQ(crypto_box_keypair(pub.data(), sec.data()), 0);  // CURVE keys are X25519 keys
  return CurveKeys(pub, sec.data());
}

FakeBroker::FakeBroker(const std::filesystem::path& keys) {
  auto secret = LoadSecret(keys, "broker");
  EXPECT_TRUE(secret.ok()) << secret.message();
  if (!secret.ok()) return;
  for (zmq::socket_t* s : {&router_, &xpub_}) {
    CurveServer(*s, secret->curve_secret, "", {0, -1, "tcp://127.0.0.1:*"});
    s->bind("tcp://127.0.0.1:*");
  }
  // Every subscription is passed up, so WaitSubscriber sees a node that connects while a node
  // that left is still subscribed (the XPUB drops the leaver's subscription when it gets to it).
  xpub_.set(zmq::sockopt::xpub_verbose, true);
  router_endpoint_ = router_.get(zmq::sockopt::last_endpoint);
  phases_endpoint_ = xpub_.get(zmq::sockopt::last_endpoint);
}

bool FakeBroker::WaitSubscriber(milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    auto left =
        std::chrono::duration_cast<milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return false;
    zmq::pollitem_t item{xpub_.handle(), 0, ZMQ_POLLIN, 0};
    if (zmq::poll(&item, 1, left) <= 0) return false;
    zmq::message_t m;
    if (!xpub_.recv(m, zmq::recv_flags::dontwait)) continue;
    if (m.size() == 1 && static_cast<const uint8_t*>(m.data())[0] == 1) return true;
  }
}

void FakeBroker::Publish(const PhaseUpdate& update) {
  auto bytes = Encode(update);
  EXPECT_TRUE(xpub_.send(zmq::buffer(bytes), zmq::send_flags::none).has_value());
}

void FakeBroker::PublishTwoFrames(const std::vector<uint8_t>& first, const PhaseUpdate& update) {
  auto bytes = Encode(update);
  EXPECT_TRUE(xpub_.send(zmq::buffer(first), zmq::send_flags::sndmore).has_value());
  EXPECT_TRUE(xpub_.send(zmq::buffer(bytes), zmq::send_flags::none).has_value());
}

void FakeBroker::SendTo(const std::vector<uint8_t>& identity, const Message& message) {
  auto bytes = Encode(message);
  EXPECT_TRUE(router_.send(zmq::buffer(identity), zmq::send_flags::sndmore).has_value());
  EXPECT_TRUE(router_.send(zmq::buffer(bytes), zmq::send_flags::none).has_value());
}

std::optional<Received> FakeBroker::Receive(milliseconds timeout) {
  zmq::pollitem_t item{router_.handle(), 0, ZMQ_POLLIN, 0};
  if (zmq::poll(&item, 1, timeout) <= 0) return std::nullopt;
  zmq::message_t identity, frame;
  if (!router_.recv(identity, zmq::recv_flags::dontwait)) return std::nullopt;
  EXPECT_TRUE(identity.more()) << "a ROUTER message without a payload frame";
  if (!identity.more() || !router_.recv(frame, zmq::recv_flags::dontwait)) return std::nullopt;
  EXPECT_FALSE(frame.more()) << "a message of more than one frame";
  Received r;
  r.identity.assign(static_cast<const uint8_t*>(identity.data()),
                    static_cast<const uint8_t*>(identity.data()) + identity.size());
  r.frame.assign(static_cast<const uint8_t*>(frame.data()),
                 static_cast<const uint8_t*>(frame.data()) + frame.size());
  auto decoded = Decode(r.frame);
  EXPECT_TRUE(decoded.ok()) << decoded.message();
  if (!decoded.ok()) return std::nullopt;
  r.message = std::move(decoded.value());
  return r;
}

std::optional<Received> FakeBroker::ReceiveUntil(const std::function<bool()>& done,
                                                 milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  while (std::chrono::steady_clock::now() < deadline && !done()) {
    if (auto r = Receive(milliseconds(10))) return r;
  }
  return Receive(milliseconds(0));
}

TestParty::TestParty(const std::filesystem::path& keys, const std::string& name,
                     const std::string& router, const std::string& phases, bool subscribe) {
  auto roster = LoadRoster(keys);
  EXPECT_TRUE(roster.ok()) << roster.message();
  auto me = LoadSecret(keys, name);
  EXPECT_TRUE(me.ok()) << me.message();
  const Certificate* broker = roster->Find("broker");
  CurveClient(dealer_, me.value(), broker->curve_public, {0, -1, router});
  CurveClient(sub_, me.value(), broker->curve_public, {0, -1, phases});
  tally::Monitor(dealer_, monitor_, ZMQ_EVENT_ALL);
  dealer_.connect(router);
  if (subscribe) {
    sub_.set(zmq::sockopt::subscribe, "");
    sub_.connect(phases);
  }
}

TestParty::TestParty(const PublicKey& broker_key, const std::string& router,
                     const SecretCertificate& me) {
  CurveClient(dealer_, me, broker_key, {0, -1, router});
  tally::Monitor(dealer_, monitor_, ZMQ_EVENT_ALL);
  dealer_.connect(router);
}

void TestParty::Send(const Message& message) { SendRaw(Encode(message)); }

void TestParty::SendRaw(const std::vector<uint8_t>& bytes) {
  EXPECT_TRUE(SendWithin(bytes, kWait)) << "no room to send within " << kWait.count() << " ms";
}

bool TestParty::TrySend(const Message& message, milliseconds wait) {
  return SendWithin(Encode(message), wait);
}

bool TestParty::SendWithin(const std::vector<uint8_t>& bytes, milliseconds wait) {
  zmq::pollitem_t item{dealer_.handle(), 0, ZMQ_POLLOUT, 0};
  if (zmq::poll(&item, 1, wait) <= 0) return false;
  return dealer_.send(zmq::buffer(bytes), zmq::send_flags::dontwait).has_value();
}

std::optional<Message> TestParty::Receive(milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    auto left =
        std::chrono::duration_cast<milliseconds>(deadline - std::chrono::steady_clock::now());
    zmq::pollitem_t item{dealer_.handle(), 0, ZMQ_POLLIN, 0};
    if (zmq::poll(&item, 1, std::max(left, milliseconds(0))) <= 0) return std::nullopt;
    zmq::message_t m;
    if (!dealer_.recv(m)) return std::nullopt;
    if (m.size() == 0) {  // the broker checking this connection is there: nodes ignore it
      ++probes_;
      continue;
    }
    auto d = Decode({static_cast<const uint8_t*>(m.data()), m.size()});
    EXPECT_TRUE(d.ok()) << d.message();
    if (!d.ok()) return std::nullopt;
    return d.value();
  }
}

std::optional<PhaseUpdate> TestParty::WaitPhase(Phase phase, std::optional<RoundId> round,
                                                milliseconds timeout) {
  return WaitUpdate(
      [&](const PhaseUpdate& u) { return u.phase == phase && (!round || u.round == *round); },
      timeout);
}

std::optional<PhaseUpdate> TestParty::WaitPhaseIn(const std::vector<Phase>& phases,
                                                  const RoundId& round, milliseconds timeout) {
  return WaitUpdate(
      [&](const PhaseUpdate& u) {
        return u.round == round && std::find(phases.begin(), phases.end(), u.phase) != phases.end();
      },
      timeout);
}

std::optional<PhaseUpdate> TestParty::WaitUpdate(
    const std::function<bool(const PhaseUpdate&)>& wanted, milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    auto left =
        std::chrono::duration_cast<milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return std::nullopt;
    zmq::pollitem_t item{sub_.handle(), 0, ZMQ_POLLIN, 0};
    if (zmq::poll(&item, 1, left) <= 0) return std::nullopt;
    zmq::message_t m;
    if (!sub_.recv(m)) return std::nullopt;
    auto d = Decode({static_cast<const uint8_t*>(m.data()), m.size()});
    if (!d.ok()) continue;
    auto* u = std::get_if<PhaseUpdate>(&d.value());
    if (u && wanted(*u)) return *u;
  }
}

bool TestParty::WaitEvent(uint16_t event, milliseconds timeout) {
  auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    auto left =
        std::chrono::duration_cast<milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return false;
    zmq::pollitem_t item{monitor_.handle(), 0, ZMQ_POLLIN, 0};
    if (zmq::poll(&item, 1, left) <= 0) return false;
    const std::optional<MonitorEvent> e = NextEvent(monitor_);
    if (e && e->id == event) return true;
  }
}

}  // namespace tally::test

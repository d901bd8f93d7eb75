#include "broker/zap.h"

#include <cstring>
#include <string>
#include <vector>

#include "schema/text.h"

namespace tally {
namespace {

constexpr const char* kZapEndpoint = "inproc://zeromq.zap.01";
constexpr int kMaxBatch = 256;  // requests answered per call

}  // namespace

ZapHandler::ZapHandler(zmq::context_t& ctx, const Roster& roster, LogSink log,
                       std::atomic<uint64_t>& denied)
    : socket_(ctx, zmq::socket_type::rep), roster_(roster), log_(std::move(log)), denied_(denied) {}

void ZapHandler::Bind() { socket_.bind(kZapEndpoint); }

void ZapHandler::Serve() {
  auto log = [this](const std::string& fields) {
    if (log_) log_("broker " + fields);
  };
  for (int i = 0; i < kMaxBatch; ++i) {
    std::vector<zmq::message_t> frames;
    try {
      zmq::message_t m;
      if (!socket_.recv(m, zmq::recv_flags::dontwait)) return;
      frames.push_back(std::move(m));
      while (frames.back().more() && frames.size() < 8) {
        zmq::message_t next;
        (void)socket_.recv(next);
        frames.push_back(std::move(next));
      }
    } catch (const zmq::error_t& e) {
      log(std::string("event=zap-error error=") + Quote(e.what()));
      return;
    }
    std::string status = "400", text = "key not in roster", user;
    const std::string request_id = frames.size() > 1 ? frames[1].to_string() : "";
    // Frames: version, request id, domain, address, identity, mechanism, credentials...
    if (frames.size() >= 7 && frames[0].to_string() == "1.0" && frames[5].to_string() == "CURVE" &&
        frames[6].size() == 32) {
      PublicKey key;
      std::memcpy(key.data(), frames[6].data(), 32);
      if (const Certificate* c = roster_.FindByCurveKey(key);
          c != nullptr && c->role != Role::kBroker) {
        status = "200";
        text = "OK";
        user = c->name;
      }
    } else {
      text = "unsupported mechanism";
    }
    if (status != "200") {
      ++denied_;
      log("event=auth-denied address=" + (frames.size() > 3 ? frames[3].to_string() : "?") +
          " reason=" + Quote(text));
    }
    try {
      socket_.send(zmq::str_buffer("1.0"), zmq::send_flags::sndmore);
      socket_.send(zmq::buffer(request_id), zmq::send_flags::sndmore);
      socket_.send(zmq::buffer(status), zmq::send_flags::sndmore);
      socket_.send(zmq::buffer(text), zmq::send_flags::sndmore);
      socket_.send(zmq::buffer(user), zmq::send_flags::sndmore);
      socket_.send(zmq::const_buffer("", 0), zmq::send_flags::none);
    } catch (const zmq::error_t& e) {
      log(std::string("event=zap-error error=") + Quote(e.what()));
    }
  }
}

}  // namespace tally

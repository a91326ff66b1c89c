// HttpServer on Boost.Beast: one I/O thread owns every connection (no per-connection threads, so
// slow clients cost a socket, not a worker); route functions run on a small pool and post their
// result back. Deadlines: idle wait, whole head, whole body, each write.
#include "app/http_server.h"

#include <sys/socket.h>

#include <atomic>
#include <boost/asio.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <cerrno>
#include <map>
#include <optional>
#include <set>
#include <vector>

#include "base/error.h"

namespace dsa::app {

namespace net = boost::asio;
namespace beast = boost::beast;
namespace http = beast::http;
using tcp = net::ip::tcp;

namespace {

std::chrono::steady_clock::duration secs(double s) {
  return std::chrono::duration_cast<std::chrono::steady_clock::duration>(std::chrono::duration<double>(s));
}

std::string default_error_body(int status, const std::string& message) {
  std::string m;
  for (char c : message) {  // the messages are ours; escape anyway
    if (c == '"' || c == '\\') m += '\\';
    if (static_cast<unsigned char>(c) >= 0x20) m += c;
  }
  return fmt::format(R"({{"error":{{"message":"{}","type":"{}","param":null,"code":null}}}})", m,
                     status >= 500 ? "server_error" : "invalid_request_error");
}

std::string chunk(const std::string& data) { return fmt::format("{:x}\r\n", data.size()) + data + "\r\n"; }

}  // namespace

class Conn;

struct HttpServer::Impl {
  explicit Impl(HttpServerOptions o) : opt(std::move(o)), pool(size_t(std::max(1, opt.handler_threads))) {}

  HttpServerOptions opt;
  net::io_context ioc{1};
  tcp::acceptor acceptor{ioc};
  net::steady_timer accept_retry{ioc}, drain_timer{ioc};
  net::thread_pool pool;
  std::map<std::pair<std::string, std::string>, HttpRoute> routes;  // (method, path)
  std::set<std::string> paths;
  std::function<std::string(int, const std::string&)> error_body = default_error_body;
  std::function<void(int)> on_response;
  // Open connections, owned here until closed (I/O thread only).
  std::map<Conn*, std::shared_ptr<Conn>> live;
  std::atomic<int64_t> n_conns{0};
  bool draining = false;  // I/O thread only
  int bound_port = 0;

  void accept();
  void begin_drain();
  void drain_expired();
  void maybe_finish() {
    if (draining && live.empty()) {
      drain_timer.cancel();
      ioc.stop();
    }
  }
};

// One client connection; lives on the I/O thread (shared_ptr kept alive by pending operations).
class Conn : public std::enable_shared_from_this<Conn> {
 public:
  Conn(HttpServer::Impl& s, tcp::socket sock) : s_(s), stream_(std::move(sock)) {}

  void start() {
    s_.live.emplace(this, shared_from_this());
    ++s_.n_conns;
    beast::error_code ec;
    stream_.socket().set_option(tcp::no_delay(true), ec);
    wait_request();
  }

  bool idle() const { return state_ == State::kIdle || state_ == State::kReading; }
  void close();
  void abort(const std::string& why);  // drain expired: end the in-flight response

 private:
  enum class State { kIdle, kReading, kHandling, kResponding };

  void wait_request();
  void read_head();
  void read_body();
  void dispatch();
  void on_result(HttpResult r);
  void pump();
  void write_reply(const HttpReply& rep, bool keep_alive);
  void write_error(int status, const std::string& msg) {
    HttpReply r;
    r.status = status;
    r.body = s_.error_body(status, msg);
    linger_ = true;  // the client may still be sending: read and drop it before closing
    write_reply(r, false);
  }
  void linger_close();
  void linger_read();
  void response_done(int status, bool keep_alive);
  void watch_disconnect();
  void client_gone();
  bool fatal(const beast::error_code& ec) { return ec || closed_; }

  HttpServer::Impl& s_;
  beast::tcp_stream stream_;
  beast::flat_buffer buf_;
  std::optional<http::request_parser<http::string_body>> parser_;
  State state_ = State::kIdle;
  bool closed_ = false, keep_alive_ = true, watching_ = false, writing_ = false;
  std::shared_ptr<DeferredReply> deferred_;
  bool streaming_ = false, stream_done_ = false;
  std::string out_;          // bytes of the write in flight
  std::string abort_tail_;   // set when a drained stream must end with an error event
  bool aborting_ = false;
  bool linger_ = false;
  size_t lingered_ = 0;
};

void Conn::close() {
  if (closed_) return;
  closed_ = true;
  if (deferred_) {
    deferred_->cancel();
    deferred_.reset();
  }
  beast::error_code ec;
  stream_.socket().shutdown(tcp::socket::shutdown_both, ec);
  stream_.socket().close(ec);
  auto keep = shared_from_this();  // the caller may hold the last other reference
  s_.live.erase(this);
  --s_.n_conns;
  s_.maybe_finish();
}

void Conn::wait_request() {
  state_ = State::kIdle;
  if (s_.draining) return close();
  if (buf_.size() > 0) return read_head();  // a pipelined request is already here
  // Keep-alive wait for the first byte; the head deadline starts when it arrives.
  stream_.expires_after(secs(s_.opt.idle_timeout_s));
  auto self = shared_from_this();
  stream_.async_read_some(buf_.prepare(4096), [self](beast::error_code ec, size_t n) {
    if (self->fatal(ec)) return self->close();
    self->buf_.commit(n);
    self->read_head();
  });
}

void Conn::read_head() {
  state_ = State::kReading;
  parser_.emplace();
  parser_->header_limit(uint32_t(std::min<size_t>(s_.opt.max_header_bytes, UINT32_MAX)));
  parser_->body_limit(uint64_t(s_.opt.max_body_bytes));  // applies to chunked bodies as well
  stream_.expires_after(secs(s_.opt.header_timeout_s));
  auto self = shared_from_this();
  http::async_read_header(stream_, buf_, *parser_, [self](beast::error_code ec, size_t) {
    if (self->closed_) return;
    if (ec == http::error::header_limit) return self->write_error(431, "the request head is too large");
    if (ec == http::error::body_limit) return self->write_error(413, "the request body is too large");
    if (ec == beast::error::timeout) return self->write_error(408, "the request head took too long");
    if (ec == http::error::end_of_stream || ec == net::error::eof || ec == net::error::connection_reset) return self->close();
    if (ec) return self->write_error(400, "malformed HTTP request");
    self->stream_.expires_never();
    auto& req = self->parser_->get();
    if (self->s_.draining) return self->write_error(503, "the server is shutting down");
    const std::string target(req.target());
    const std::string path = target.substr(0, target.find('?'));
    if (!self->s_.paths.count(path)) return self->write_error(404, "no such endpoint");
    if (!self->s_.routes.count({std::string(req.method_string()), path}))
      return self->write_error(405, "method not allowed");
    if (beast::iequals(req[http::field::expect], "100-continue")) {
      // curl sends this for larger bodies and waits for the go-ahead before sending them.
      self->out_ = "HTTP/1.1 100 Continue\r\n\r\n";
      self->stream_.expires_after(secs(self->s_.opt.write_timeout_s));
      return net::async_write(self->stream_, net::buffer(self->out_), [self](beast::error_code ec2, size_t) {
        if (self->fatal(ec2)) return self->close();
        self->read_body();
      });
    }
    self->read_body();
  });
}

void Conn::read_body() {
  stream_.expires_after(secs(s_.opt.body_timeout_s));
  auto self = shared_from_this();
  http::async_read(stream_, buf_, *parser_, [self](beast::error_code ec, size_t) {
    if (self->closed_) return;
    if (ec == http::error::body_limit) return self->write_error(413, "the request body is too large");
    if (ec == beast::error::timeout) return self->write_error(408, "the request body took too long");
    if (ec == http::error::end_of_stream || ec == net::error::eof || ec == net::error::connection_reset ||
        ec == http::error::partial_message)
      return self->close();
    if (ec) return self->write_error(400, "malformed HTTP request");
    self->stream_.expires_never();
    self->dispatch();
  });
}

void Conn::dispatch() {
  state_ = State::kHandling;
  auto req = parser_->release();
  parser_.reset();
  keep_alive_ = req.keep_alive();
  HttpRequest hr;
  hr.method = std::string(req.method_string());
  const std::string target(req.target());
  hr.path = target.substr(0, target.find('?'));
  hr.content_type = std::string(req[http::field::content_type]);
  hr.body = std::move(req.body());
  const HttpRoute* route = &s_.routes.at({hr.method, hr.path});
  watch_disconnect();
  auto self = shared_from_this();
  net::post(s_.pool, [self, route, hr = std::move(hr)]() mutable {
    HttpResult r;
    try {
      r = (*route)(hr);
    } catch (const std::exception& e) {
      r = HttpResult{};
      r.reply.status = 500;
      r.reply.body = self->s_.error_body(500, e.what());
    }
    net::post(self->s_.ioc, [self, r = std::move(r)]() mutable { self->on_result(std::move(r)); });
  });
}

void Conn::on_result(HttpResult r) {
  if (closed_) {
    if (r.deferred) r.deferred->cancel();  // the client left while the route ran
    return;
  }
  state_ = State::kResponding;
  if (!r.deferred) return write_reply(r.reply, keep_alive_);
  deferred_ = std::move(r.deferred);
  streaming_ = deferred_->streaming();
  stream_done_ = false;
  std::weak_ptr<Conn> weak = weak_from_this();
  net::io_context& ioc = s_.ioc;
  auto wake = [weak, &ioc] {
    net::post(ioc, [weak] {
      if (auto c = weak.lock()) c->pump();
    });
  };
  if (streaming_) {
    const bool keep = keep_alive_ && !s_.draining;
    out_ = fmt::format(
        "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nX-Accel-Buffering: no\r\n"
        "Transfer-Encoding: chunked\r\nConnection: {}\r\n\r\n",
        keep ? "keep-alive" : "close");
    keep_alive_ = keep;
    writing_ = true;
    stream_.expires_after(secs(s_.opt.write_timeout_s));
    auto self = shared_from_this();
    net::async_write(stream_, net::buffer(out_), [self](beast::error_code ec, size_t) {
      self->writing_ = false;
      if (self->fatal(ec)) return self->close();
      self->stream_.expires_never();
      self->pump();
    });
  }
  deferred_->start(wake);
  pump();
}

void Conn::pump() {
  if (closed_ || writing_ || state_ != State::kResponding) return;
  if (aborting_) {
    aborting_ = false;
    out_ = chunk(abort_tail_) + "0\r\n\r\n";
    keep_alive_ = false;
    stream_done_ = true;
  } else {
    if (!deferred_) return;
    if (!streaming_) {
      HttpReply rep;
      if (!deferred_->poll(nullptr, &rep)) return;
      deferred_.reset();
      return write_reply(rep, keep_alive_);
    }
    std::string data;
    stream_done_ = deferred_->poll(&data, nullptr);
    if (data.empty() && !stream_done_) return;
    out_ = data.empty() ? std::string() : chunk(data);
    if (stream_done_) {
      out_ += "0\r\n\r\n";
      deferred_.reset();
    }
  }
  writing_ = true;
  stream_.expires_after(secs(s_.opt.write_timeout_s));
  auto self = shared_from_this();
  net::async_write(stream_, net::buffer(out_), [self](beast::error_code ec, size_t) {
    self->writing_ = false;
    if (self->fatal(ec)) return self->close();  // a client that stopped reading times out here
    self->stream_.expires_never();
    if (self->stream_done_) return self->response_done(200, self->keep_alive_);
    self->pump();
  });
}

void Conn::write_reply(const HttpReply& rep, bool keep_alive) {
  state_ = State::kResponding;
  auto res = std::make_shared<http::response<http::string_body>>(http::status(unsigned(rep.status)), 11);
  res->set(http::field::server, "dsa");
  res->set(http::field::content_type, rep.content_type);
  for (const auto& [k, v] : rep.headers) res->set(k, v);
  res->body() = rep.body;
  keep_alive = keep_alive && !s_.draining;
  res->keep_alive(keep_alive);
  res->prepare_payload();
  writing_ = true;
  stream_.expires_after(secs(s_.opt.write_timeout_s));
  auto self = shared_from_this();
  const int status = rep.status;
  http::async_write(stream_, *res, [self, res, status, keep_alive](beast::error_code ec, size_t) {
    self->writing_ = false;
    if (self->fatal(ec)) return self->close();
    self->stream_.expires_never();
    self->response_done(status, keep_alive);
  });
}

void Conn::response_done(int status, bool keep_alive) {
  if (s_.on_response) s_.on_response(status);
  deferred_.reset();
  streaming_ = false;
  if (watching_) {
    beast::error_code ec;
    stream_.socket().cancel(ec);  // the disconnect watch ends with the request
  }
  if (linger_) return linger_close();
  if (!keep_alive || s_.draining) return close();
  wait_request();
}

// Closing with unread input makes the kernel send RST, which can destroy the error reply before
// the client reads it: stop sending, then read and drop input for a bounded time and amount.
void Conn::linger_close() {
  state_ = State::kIdle;
  beast::error_code ec;
  stream_.socket().shutdown(tcp::socket::shutdown_send, ec);
  stream_.expires_after(std::chrono::seconds(2));
  linger_read();
}

void Conn::linger_read() {
  buf_.consume(buf_.size());
  auto self = shared_from_this();
  stream_.async_read_some(buf_.prepare(65536), [self](beast::error_code ec, size_t n) {
    if (ec || self->closed_) return self->close();
    self->lingered_ += n;
    if (self->lingered_ > (size_t(64) << 20)) return self->close();
    self->buf_.commit(n);
    self->linger_read();
  });
}

// While a request is handled or generated, a readable socket with nothing to read means the
// client closed it: cancel the work at once (streaming or not).
void Conn::watch_disconnect() {
  if (watching_ || closed_) return;
  watching_ = true;
  auto self = shared_from_this();
  stream_.socket().async_wait(tcp::socket::wait_read, [self](beast::error_code ec) {
    self->watching_ = false;
    if (self->closed_ || ec == net::error::operation_aborted) return;
    if (self->state_ != State::kHandling && self->state_ != State::kResponding) return;
    if (ec) return self->client_gone();
    char c;
    const ssize_t n = ::recv(self->stream_.socket().native_handle(), &c, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)) return self->client_gone();
    if (n < 0) return self->watch_disconnect();
    // n > 0: the client already sent its next request (pipelining); it is read after this one.
  });
}

void Conn::client_gone() { close(); }

void Conn::abort(const std::string& why) {
  if (closed_) return;
  if (state_ == State::kHandling) return close();  // no reply started: nothing to end cleanly
  if (!deferred_) return;                           // a plain reply is being written
  auto d = std::move(deferred_);
  d->cancel();
  if (!streaming_) return write_reply(d->abort_reply(why), false);
  abort_tail_ = d->abort_stream_tail(why);
  aborting_ = true;
  pump();
}

// ---- server ------------------------------------------------------------------------------

void HttpServer::Impl::accept() {
  acceptor.async_accept(ioc, [this](beast::error_code ec, tcp::socket sock) {
    if (!acceptor.is_open()) return;
    if (ec) {  // e.g. out of descriptors: retry shortly instead of spinning
      accept_retry.expires_after(std::chrono::milliseconds(100));
      accept_retry.async_wait([this](beast::error_code e) {
        if (!e) accept();
      });
      return;
    }
    if (n_conns >= opt.max_connections || draining) {
      beast::error_code e;
      sock.close(e);
    } else {
      std::make_shared<Conn>(*this, std::move(sock))->start();
    }
    accept();
  });
}

void HttpServer::Impl::begin_drain() {
  if (draining) return;
  draining = true;
  beast::error_code ec;
  acceptor.close(ec);
  accept_retry.cancel();
  std::vector<std::shared_ptr<Conn>> idle;
  for (auto& [p, c] : live)
    if (c->idle()) idle.push_back(c);
  for (auto& c : idle) c->close();  // keep-alive waits and half-read requests end now
  drain_timer.expires_after(secs(opt.drain_timeout_s));
  drain_timer.async_wait([this](beast::error_code e) {
    if (!e) drain_expired();
  });
  maybe_finish();
}

void HttpServer::Impl::drain_expired() {
  std::vector<std::shared_ptr<Conn>> all;
  for (auto& [p, c] : live) all.push_back(c);
  for (auto& c : all) c->abort("the server is shutting down");
}

HttpServer::HttpServer(HttpServerOptions opt) : impl_(std::make_unique<Impl>(std::move(opt))) {}

HttpServer::~HttpServer() {
  impl_->pool.join();
}

void HttpServer::route(const std::string& method, const std::string& path, HttpRoute fn) {
  impl_->routes[{method, path}] = std::move(fn);
  impl_->paths.insert(path);
}

void HttpServer::set_error_body(std::function<std::string(int, const std::string&)> fn) { impl_->error_body = std::move(fn); }
void HttpServer::set_response_hook(std::function<void(int)> fn) { impl_->on_response = std::move(fn); }

void HttpServer::listen() {
  Impl& s = *impl_;
  beast::error_code ec;
  tcp::resolver resolver(s.ioc);
  auto results = resolver.resolve(s.opt.host, std::to_string(s.opt.port), tcp::resolver::numeric_service, ec);
  DSA_CHECK(!ec && !results.empty(), "cannot resolve the address '{}': {}", s.opt.host, ec.message());
  const tcp::endpoint ep = results.begin()->endpoint();
  s.acceptor.open(ep.protocol(), ec);
  DSA_CHECK(!ec, "cannot open a socket for {}: {}", s.opt.host, ec.message());
  // SO_REUSEADDR only (restarts while old connections sit in TIME_WAIT); never SO_REUSEPORT, so
  // a second server on a port in use fails here instead of silently sharing its traffic.
  s.acceptor.set_option(net::socket_base::reuse_address(true), ec);
  s.acceptor.bind(ep, ec);
  DSA_CHECK(!ec, "cannot listen on {}:{}: {}", s.opt.host, s.opt.port, ec.message());
  s.acceptor.listen(s.opt.backlog, ec);
  DSA_CHECK(!ec, "cannot listen on {}:{}: {}", s.opt.host, s.opt.port, ec.message());
  s.bound_port = s.acceptor.local_endpoint().port();
}

int HttpServer::port() const { return impl_->bound_port; }

void HttpServer::run() {
  impl_->accept();
  impl_->ioc.run();
}

void HttpServer::shutdown() {
  net::post(impl_->ioc, [this] { impl_->begin_drain(); });
}

int64_t HttpServer::open_connections() const { return impl_->n_conns; }

}  // namespace dsa::app

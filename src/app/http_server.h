// Asynchronous HTTP/1.1 server for `dsa serve` (Boost.Beast on one I/O thread): bounded bodies
// however they are framed, whole-head / whole-body / write deadlines per connection, a real listen
// backlog, no SO_REUSEPORT, no Range handling, cancellation of work whose client is gone, drain on
// shutdown. Routes are plain functions; slow work runs on a small handler pool.
#pragma once
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <utility>
#include <vector>

namespace dsa::app {

struct HttpServerOptions {
  std::string host = "127.0.0.1";
  int port = 8000;                        // 0: pick a free port (see HttpServer::port())
  size_t max_body_bytes = 8u << 20;       // Content-Length or chunked: larger bodies get 413
  size_t max_header_bytes = 16u << 10;    // request line + headers: larger get 431
  double header_timeout_s = 10;           // from the first byte of a request to the end of its head
  double body_timeout_s = 30;             // the whole body, once the head is read
  double idle_timeout_s = 30;             // keep-alive: waiting for the next request
  double write_timeout_s = 30;            // each write to a client that does not read
  double drain_timeout_s = 60;            // shutdown: how long in-flight responses may still run
  int backlog = 1024;                     // listen(2) backlog
  int max_connections = 4096;             // beyond this, new connections are closed at once
  int handler_threads = 4;                // pool that runs route functions (parse, tokenise, submit)
};

struct HttpRequest {
  std::string method, path, body;  // path without the query string
  std::string content_type;
};

struct HttpReply {
  int status = 200;
  std::string content_type = "application/json";
  std::string body;
  std::vector<std::pair<std::string, std::string>> headers;
};

// A response produced later by other threads (a generation). The server calls start() once on
// its I/O thread with a wake function that the source calls (from any thread, any number of
// times) when poll() may have something new; poll() never blocks.
class DeferredReply {
 public:
  virtual ~DeferredReply() = default;
  // true: a server-sent-event stream (chunked, headers sent at once); false: one reply at the end.
  virtual bool streaming() const = 0;
  virtual void start(std::function<void()> wake) = 0;
  // Streaming: appends ready bytes to *data; returns true once the stream is complete (its last
  // bytes included). Non-streaming: returns true with *reply filled once the result is there.
  virtual bool poll(std::string* data, HttpReply* reply) = 0;
  // The client is gone or timed out: stop the work now (idempotent; from the I/O thread).
  virtual void cancel() = 0;
  // Shutdown drain expired: the last bytes of a stream (an error event and its end), or the reply
  // of a non-streaming request. The work is cancelled separately.
  virtual std::string abort_stream_tail(const std::string& why) = 0;
  virtual HttpReply abort_reply(const std::string& why) = 0;
};

// What a route returns: a reply now, or a deferred one.
struct HttpResult {
  HttpReply reply;
  std::shared_ptr<DeferredReply> deferred;
};

using HttpRoute = std::function<HttpResult(const HttpRequest&)>;

class HttpServer {
 public:
  explicit HttpServer(HttpServerOptions opt);
  ~HttpServer();
  HttpServer(const HttpServer&) = delete;
  HttpServer& operator=(const HttpServer&) = delete;

  // Routes by exact path; a known path with another method gets 405, an unknown one 404.
  void route(const std::string& method, const std::string& path, HttpRoute fn);
  // JSON body of the server's own errors (400 malformed, 404, 405, 408, 413, 431, 503, 500).
  void set_error_body(std::function<std::string(int status, const std::string& message)> fn);
  // Called once per response sent (status code), e.g. for metrics.
  void set_response_hook(std::function<void(int status)> fn);

  // Binds and listens (a port in use is an error: no SO_REUSEPORT); throws dsa::Error.
  void listen();
  int port() const;
  // Serves until shutdown() has drained every connection. Call from one thread.
  void run();
  // From any thread (signal watchers): stop accepting, end idle connections, let in-flight
  // responses finish for up to drain_timeout_s, then end them (streams with an error event).
  void shutdown();
  int64_t open_connections() const;

  struct Impl;

 private:
  std::unique_ptr<Impl> impl_;
};

}  // namespace dsa::app

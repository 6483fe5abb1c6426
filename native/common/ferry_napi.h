/*
 * What Ferry's N-API addons share (native/dns-udp, native/relay): the N-API status check, socket
 * addresses from and to JavaScript strings, errors carrying an errno code, and the small
 * functions every socket-owning addon exports. Header-only: each addon is its own shared object.
 */
#ifndef FERRY_NAPI_H
#define FERRY_NAPI_H

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <node_api.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* Returns NULL (to JavaScript: an exception) when an N-API call fails; for functions of (env, info). */
#define CHECK(call)                                                       \
  do {                                                                    \
    if ((call) != napi_ok) {                                              \
      napi_throw_error(env, "FERRY_NATIVE", "N-API call failed: " #call); \
      return NULL;                                                        \
    }                                                                     \
  } while (0)

/* An IPv4 or IPv6 socket address. */
typedef union {
  struct sockaddr sa;
  struct sockaddr_in in4;
  struct sockaddr_in6 in6;
} addr_t;

static inline socklen_t addr_len(const addr_t *a) {
  return a->sa.sa_family == AF_INET6 ? sizeof(struct sockaddr_in6) : sizeof(struct sockaddr_in);
}

/* Fills `a` from a literal IPv4 or IPv6 address and a port; returns the family, or -1. */
static inline int parse_addr(const char *host, int port, addr_t *a) {
  memset(a, 0, sizeof *a);
  if (inet_pton(AF_INET, host, &a->in4.sin_addr) == 1) {
    a->in4.sin_family = AF_INET;
    a->in4.sin_port = htons((uint16_t)port);
    return AF_INET;
  }
  if (inet_pton(AF_INET6, host, &a->in6.sin6_addr) == 1) {
    a->in6.sin6_family = AF_INET6;
    a->in6.sin6_port = htons((uint16_t)port);
    return AF_INET6;
  }
  return -1;
}

static inline int addr_port(const addr_t *a) {
  return ntohs(a->sa.sa_family == AF_INET6 ? a->in6.sin6_port : a->in4.sin_port);
}

/* Throws an Error whose `code` names the errno (EADDRINUSE, ... or EIO), with `what` in the message. */
static inline napi_value throw_errno(napi_env env, const char *what, int err) {
  char msg[256];
  snprintf(msg, sizeof msg, "%s: %s", what, strerror(err));
  napi_value code, text, error;
  const char *name = err == EADDRINUSE      ? "EADDRINUSE"
                     : err == EADDRNOTAVAIL ? "EADDRNOTAVAIL"
                     : err == EACCES        ? "EACCES"
                     : err == EMFILE        ? "EMFILE"
                                            : "EIO";
  napi_create_string_utf8(env, name, NAPI_AUTO_LENGTH, &code);
  napi_create_string_utf8(env, msg, NAPI_AUTO_LENGTH, &text);
  napi_create_error(env, code, text, &error);
  napi_set_named_property(env, error, "code", code);
  napi_throw(env, error);
  return NULL;
}

/* [fd, port] of a bound socket, as the addons' bind() functions return it. */
static inline napi_value fd_and_port(napi_env env, int fd) {
  addr_t bound;
  socklen_t blen = sizeof bound;
  getsockname(fd, &bound.sa, &blen);
  napi_value out, vfd, vport;
  CHECK(napi_create_array_with_length(env, 2, &out));
  CHECK(napi_create_int32(env, fd, &vfd));
  CHECK(napi_create_int32(env, addr_port(&bound), &vport));
  CHECK(napi_set_element(env, out, 0, vfd));
  CHECK(napi_set_element(env, out, 1, vport));
  return out;
}

/* closeFd(fd): closes a socket from bind() that never reached the addon's owner object. */
static inline napi_value js_close_fd(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  int32_t fd;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  CHECK(napi_get_value_int32(env, argv[0], &fd));
  if (fd > 2) close(fd);
  return NULL;
}

#endif

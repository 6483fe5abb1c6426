/*
 * Batched UDP for the DNS server (src/dns/udp-io.ts): recvmmsg and sendmmsg on a socket watched by
 * Node's own event loop, one JavaScript call per batch of datagrams instead of one per datagram.
 *
 * Why native: Node 20's dgram reads and sends one datagram per system call and per JavaScript
 * callback, allocating a Buffer, an address object and a send request for each; a profile of the
 * server under dnsperf spent 63% of its time there. Node 20 also has no SO_REUSEPORT for UDP
 * (added in 22.12), so cluster workers could not have sockets of their own. No npm package offers
 * batched UDP for Node, so this file does: it is only I/O, every DNS decision stays in TypeScript.
 *
 * Model: no threads. The socket is non-blocking and watched with uv_poll on the main loop. When it
 * is readable, up to `slots` datagrams are read with one recvmmsg into a receive arena that
 * JavaScript owns (rx: slots * slotSize bytes; lens: one int32 length per slot, -1 for a datagram
 * longer than a slot, which is dropped; addrs: the sender of each slot as a raw sockaddr of
 * ADDR_SLOT bytes). Then `onBatch(count)` is called once; it answers by calling `reply(answers)`,
 * which sends answers[i] to the sender of slot i with one sendmmsg. The arena is reused for the
 * next batch, so JavaScript copies what it keeps (a request answered later is sent with `sendTo`
 * and a copy of its address). At most MAX_ROUNDS batches are read per wake-up, so TCP and IPC work
 * on the same loop is not starved; epoll is level-triggered and wakes the loop again.
 *
 * A channel is closed with its environment too (an async cleanup hook): a worker thread that ends
 * with its socket open (terminated, or an uncaught exception) would otherwise leave the poll
 * handle on the thread's loop, and Node aborts the whole process on a loop closed with open handles.
 *
 * Spreading (spread()): the kernel picks a socket of a SO_REUSEPORT group by a hash of the
 * sender's address and port, so a few busy clients can land mostly on one thread while another
 * idles (dnsperf's 8 sockets split 34/66). A classic BPF program attached to the group picks the
 * socket instead: a random number (or the receiving CPU) modulo the number of query threads. The
 * kernel treats the program's result as an index into the group's sockets and falls back to the
 * hash when it is out of range, so the program stays correct while a thread is gone (the group
 * is one socket short until its replacement binds and takes the freed place at the end).
 *
 * Waiting for the next batch (wait_next). Under load, a thread that found its socket empty after
 * answering a batch went back to epoll and slept, and the next datagram woke it again: with the
 * random spread each wake-up found ~4 datagrams, and the sleep, the wake-up (an IPI across cores,
 * a VM exit on a virtual machine) and the loop's turn around them cost more than answering them
 * (perf: a third of a busy thread's time in the scheduler). So after a batch the thread may wait
 * up to SPIN_NS for the next datagram before it sleeps, calling sched_yield between reads: a
 * runnable task on the same core (a client, the other query thread) gets the core meanwhile, and
 * with the core to itself the thread polls. Waiting pays only when the next datagram usually
 * comes within the wait, so each channel keeps a score of how often it did (the recent waits,
 * weighted as a moving average) and waits only while most did; below that it still waits on one
 * empty socket in SPIN_PROBE, to notice when the load rises. An idle server never waits (nothing
 * wakes it), and a lightly loaded one wastes at most one wait in SPIN_PROBE wake-ups.
 *
 * Sends never block: a datagram the kernel cannot take at once (EAGAIN, a full send buffer) is
 * dropped and counted, as a router would drop it, and the client retries.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/filter.h>
#include <netinet/in.h>
#include <node_api.h>
#include <sched.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "ferry_napi.h"

#define ADDR_SLOT 28 /* sizeof(struct sockaddr_in6), the larger of the two families */
#define MAX_SLOTS 1024
#define MAX_ROUNDS 8
/* How long a thread waits for the next datagram after a batch (see wait_next). */
#define SPIN_NS 20000
/* The wait score (of 1024) from which a thread waits after every batch. */
#define SPIN_ON 716
/* Below it, a thread still waits on one empty socket in this many, to see whether waiting pays. */
#define SPIN_PROBE 16

typedef struct {
  napi_env env;
  int fd;
  int closed;
  uv_poll_t poll;
  napi_ref self; /* the JavaScript object, kept alive while polling */
  napi_ref on_batch;
  napi_ref rx_ref, lens_ref, addrs_ref;
  napi_async_context actx;
  napi_async_cleanup_hook_handle cleanup; /* removed once the poll handle is closed */
  uint8_t *rx;
  int32_t *lens;
  uint8_t *addrs;
  uint32_t slots, slot_size;
  uint32_t batch; /* datagrams of the batch being handled; 0 outside onBatch */
  int32_t score;  /* how often waiting for the next datagram paid, of 1024 (see wait_next) */
  uint32_t probe; /* empty sockets seen while the score is low */
  struct mmsghdr *msgs;
  struct iovec *iov;
  struct mmsghdr *out;
  struct iovec *out_iov;
  double received, sent, truncated, send_dropped, recv_errors, batches;
} channel_t;

/* bind(host, port, reusePort) -> [fd, boundPort] */
static napi_value js_bind(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  char host[64];
  size_t hlen;
  int32_t port;
  bool reuse;
  CHECK(napi_get_value_string_utf8(env, argv[0], host, sizeof host, &hlen));
  CHECK(napi_get_value_int32(env, argv[1], &port));
  CHECK(napi_get_value_bool(env, argv[2], &reuse));
  addr_t a;
  int family = parse_addr(host, port, &a);
  if (family < 0) {
    napi_throw_type_error(env, "FERRY_NATIVE", "bind: not an IP address");
    return NULL;
  }
  int fd = socket(family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return throw_errno(env, "socket", errno);
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (reuse && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) < 0) {
    int e = errno;
    close(fd);
    return throw_errno(env, "SO_REUSEPORT", e);
  }
  /* Larger kernel buffers absorb bursts (capped by net.core.[rw]mem_max; failure is harmless). */
  int buf = 4 * 1024 * 1024;
  setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &buf, sizeof buf);
  setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &buf, sizeof buf);
  if (bind(fd, &a.sa, addr_len(&a)) < 0) {
    int e = errno;
    close(fd);
    return throw_errno(env, "bind", e);
  }
  return fd_and_port(env, fd);
}

/*
 * spread(fd, count, mode): attaches to the SO_REUSEPORT group of bound socket `fd` a classic BPF
 * program that returns (mode "random": a random number, "cpu": the receiving CPU) modulo `count`.
 * Any member may attach it; attaching again (a replacement thread) replaces it with its equal.
 */
static napi_value js_spread(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  int32_t fd, count;
  char mode[16];
  size_t mlen;
  CHECK(napi_get_value_int32(env, argv[0], &fd));
  CHECK(napi_get_value_int32(env, argv[1], &count));
  CHECK(napi_get_value_string_utf8(env, argv[2], mode, sizeof mode, &mlen));
  int cpu = strcmp(mode, "cpu") == 0;
  if ((!cpu && strcmp(mode, "random") != 0) || count < 1 || count > 1024) {
    napi_throw_range_error(env, "FERRY_NATIVE", "spread: mode must be random or cpu, count 1-1024");
    return NULL;
  }
  struct sock_filter code[] = {
      BPF_STMT(BPF_LD | BPF_W | BPF_ABS, (uint32_t)(SKF_AD_OFF + (cpu ? SKF_AD_CPU : SKF_AD_RANDOM))),
      BPF_STMT(BPF_ALU | BPF_MOD | BPF_K, (uint32_t)count),
      BPF_STMT(BPF_RET | BPF_A, 0),
  };
  struct sock_fprog prog = {.len = sizeof code / sizeof code[0], .filter = code};
  if (setsockopt(fd, SOL_SOCKET, SO_ATTACH_REUSEPORT_CBPF, &prog, sizeof prog) < 0)
    return throw_errno(env, "SO_ATTACH_REUSEPORT_CBPF", errno);
  return NULL;
}

static void on_poll(uv_poll_t *handle, int status, int events);
static void init_slots(channel_t *ch);

static void free_channel(channel_t *ch) {
  free(ch->msgs);
  free(ch->iov);
  free(ch->out);
  free(ch->out_iov);
  free(ch);
}

static void on_closed(uv_handle_t *h) {
  channel_t *ch = h->data;
  if (ch->cleanup) napi_remove_async_cleanup_hook(ch->cleanup);
  free_channel(ch);
}

static void release_refs(channel_t *ch) {
  napi_env env = ch->env;
  napi_delete_reference(env, ch->on_batch);
  napi_delete_reference(env, ch->rx_ref);
  napi_delete_reference(env, ch->lens_ref);
  napi_delete_reference(env, ch->addrs_ref);
  napi_delete_reference(env, ch->self);
  napi_async_destroy(env, ch->actx);
}

static void shut(channel_t *ch) {
  if (ch->closed) return;
  ch->closed = 1;
  uv_poll_stop(&ch->poll);
  close(ch->fd);
  release_refs(ch);
  uv_close((uv_handle_t *)&ch->poll, on_closed);
}

/* The environment is going away with the channel open: close the socket and the poll handle (its
 * references go with the environment); on_closed then tells Node the cleanup is done. */
static void on_env_teardown(napi_async_cleanup_hook_handle handle, void *arg) {
  channel_t *ch = arg;
  ch->cleanup = handle;
  if (ch->closed) return; /* shut() already closing: on_closed will remove the hook */
  ch->closed = 1;
  uv_poll_stop(&ch->poll);
  close(ch->fd);
  uv_close((uv_handle_t *)&ch->poll, on_closed);
}

static void get_typed(napi_env env, napi_value v, void **data, size_t *bytes) {
  bool is_buffer = false;
  napi_is_buffer(env, v, &is_buffer);
  if (is_buffer) {
    napi_get_buffer_info(env, v, data, bytes);
    return;
  }
  napi_typedarray_type t;
  size_t len, off;
  napi_value ab;
  *data = NULL;
  *bytes = 0; /* not a typed array: open() rejects the sizes */
  if (napi_get_typedarray_info(env, v, &t, &len, data, &ab, &off) != napi_ok) return;
  *bytes = len * (t == napi_int32_array ? 4 : 1);
}

/* open(fd, rx, lens, addrs, slotSize, onBatch) -> channel (an object holding the state) */
static napi_value js_open(napi_env env, napi_callback_info info) {
  size_t argc = 6;
  napi_value argv[6];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  int32_t fd, slot_size;
  CHECK(napi_get_value_int32(env, argv[0], &fd));
  CHECK(napi_get_value_int32(env, argv[4], &slot_size));
  void *rx, *lens, *addrs;
  size_t rx_bytes, lens_bytes, addrs_bytes;
  get_typed(env, argv[1], &rx, &rx_bytes);
  get_typed(env, argv[2], &lens, &lens_bytes);
  get_typed(env, argv[3], &addrs, &addrs_bytes);
  uint32_t slots = (uint32_t)(lens_bytes / 4);
  if (slot_size < 512 || slots == 0 || slots > MAX_SLOTS || rx_bytes < (size_t)slots * slot_size ||
      addrs_bytes < (size_t)slots * ADDR_SLOT) {
    napi_throw_range_error(env, "FERRY_NATIVE", "open: arena sizes do not match");
    return NULL;
  }
  channel_t *ch = calloc(1, sizeof *ch);
  ch->env = env;
  ch->fd = fd;
  ch->rx = rx;
  ch->lens = lens;
  ch->addrs = addrs;
  ch->slots = slots;
  ch->slot_size = (uint32_t)slot_size;
  ch->score = 1024; /* a server starting under load waits at once; a quiet one learns fast */
  ch->msgs = calloc(slots, sizeof *ch->msgs);
  ch->iov = calloc(slots, sizeof *ch->iov);
  ch->out = calloc(slots, sizeof *ch->out);
  ch->out_iov = calloc(slots, sizeof *ch->out_iov);
  uv_loop_t *loop;
  CHECK(napi_get_uv_event_loop(env, &loop));
  if (uv_poll_init(loop, &ch->poll, fd) != 0) {
    free_channel(ch);
    napi_throw_error(env, "FERRY_NATIVE", "open: uv_poll_init failed");
    return NULL;
  }
  ch->poll.data = ch;
  init_slots(ch);
  napi_value obj, name;
  CHECK(napi_create_object(env, &obj));
  CHECK(napi_wrap(env, obj, ch, NULL, NULL, NULL));
  CHECK(napi_create_reference(env, obj, 1, &ch->self));
  CHECK(napi_create_reference(env, argv[5], 1, &ch->on_batch));
  CHECK(napi_create_reference(env, argv[1], 1, &ch->rx_ref));
  CHECK(napi_create_reference(env, argv[2], 1, &ch->lens_ref));
  CHECK(napi_create_reference(env, argv[3], 1, &ch->addrs_ref));
  CHECK(napi_create_string_utf8(env, "ferry.dns.udp", NAPI_AUTO_LENGTH, &name));
  CHECK(napi_async_init(env, obj, name, &ch->actx));
  CHECK(napi_add_async_cleanup_hook(env, on_env_teardown, ch, &ch->cleanup));
  uv_poll_start(&ch->poll, UV_READABLE, on_poll);
  return obj;
}

static channel_t *unwrap(napi_env env, napi_value v) {
  channel_t *ch = NULL;
  if (napi_unwrap(env, v, (void **)&ch) != napi_ok || ch == NULL || ch->closed) {
    napi_throw_error(env, "FERRY_NATIVE", "channel is closed");
    return NULL;
  }
  return ch;
}

static uint64_t now_ns(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

/* The arena's receive headers: the iovecs and name buffers stay, recvmmsg overwrites the name
 * lengths of the slots it filled (reset after each batch, in reset_slots). */
static void init_slots(channel_t *ch) {
  for (uint32_t i = 0; i < ch->slots; i++) {
    ch->iov[i].iov_base = ch->rx + (size_t)i * ch->slot_size;
    ch->iov[i].iov_len = ch->slot_size;
    memset(&ch->msgs[i].msg_hdr, 0, sizeof ch->msgs[i].msg_hdr);
    ch->msgs[i].msg_hdr.msg_iov = &ch->iov[i];
    ch->msgs[i].msg_hdr.msg_iovlen = 1;
    ch->msgs[i].msg_hdr.msg_name = ch->addrs + (size_t)i * ADDR_SLOT;
    ch->msgs[i].msg_hdr.msg_namelen = ADDR_SLOT;
  }
}

static void reset_slots(channel_t *ch, int n) {
  for (int i = 0; i < n; i++) ch->msgs[i].msg_hdr.msg_namelen = ADDR_SLOT;
}

static int recv_batch(channel_t *ch) {
  return recvmmsg(ch->fd, ch->msgs, ch->slots, MSG_DONTWAIT, NULL);
}

static int empty(int n) {
  return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR);
}

/* The moving average of the waits' outcomes: 1/8 weight to the latest. */
static void score_wait(channel_t *ch, int paid) {
  ch->score += ((paid ? 1024 : 0) - ch->score) / 8;
}

/*
 * After a batch that drained the socket: the next datagrams, waited for up to SPIN_NS when that
 * pays (see the file comment); 0 or less (errno set) to go back to epoll.
 */
static int wait_next(channel_t *ch) {
  if (ch->score < SPIN_ON && ++ch->probe % SPIN_PROBE != 0) return 0;
  int n = recv_batch(ch);
  if (!empty(n)) {
    if (n > 0) score_wait(ch, 1);
    return n;
  }
  uint64_t end = now_ns() + SPIN_NS;
  do {
    sched_yield();
    n = recv_batch(ch);
    if (!empty(n)) {
      if (n > 0) score_wait(ch, 1);
      return n;
    }
  } while (now_ns() < end);
  score_wait(ch, 0);
  return n;
}

static void on_poll(uv_poll_t *handle, int status, int events) {
  channel_t *ch = handle->data;
  if (ch->closed) return;
  napi_env env = ch->env;
  int n = recv_batch(ch);
  for (int round = 0;;) {
    if (n <= 0) {
      if (n < 0 && !empty(n)) ch->recv_errors++;
      return;
    }
    for (int i = 0; i < n; i++) {
      int trunc = (ch->msgs[i].msg_hdr.msg_flags & MSG_TRUNC) != 0;
      ch->lens[i] = trunc ? -1 : (int32_t)ch->msgs[i].msg_len;
      if (trunc) ch->truncated++;
    }
    ch->received += n;
    ch->batches++;
    ch->batch = (uint32_t)n;
    napi_handle_scope scope;
    napi_open_handle_scope(env, &scope);
    napi_value self, cb, arg, result;
    napi_get_reference_value(env, ch->self, &self);
    napi_get_reference_value(env, ch->on_batch, &cb);
    napi_create_int32(env, n, &arg);
    /* napi_make_callback runs the microtasks and nextTicks queued by the batch, as Node does. */
    napi_status st = napi_make_callback(env, ch->actx, self, cb, 1, &arg, &result);
    if (st == napi_pending_exception) {
      napi_value exc;
      napi_get_and_clear_last_exception(env, &exc);
      napi_fatal_exception(env, exc);
    }
    napi_close_handle_scope(env, scope);
    if (ch->closed) return;
    ch->batch = 0; /* the arena's addresses are stale from here on */
    reset_slots(ch, n);
    if (++round == MAX_ROUNDS) return;
    /* A full batch may have left more queued; a short one drained the socket. */
    n = (uint32_t)n == ch->slots ? recv_batch(ch) : wait_next(ch);
  }
}

static int slot_addr_len(const uint8_t *a) {
  sa_family_t f;
  memcpy(&f, a, sizeof f);
  return f == AF_INET6 ? (int)sizeof(struct sockaddr_in6) : f == AF_INET ? (int)sizeof(struct sockaddr_in) : -1;
}

/* reply(channel, answers: (Buffer|undefined)[], count): answers[i] to the sender of slot i. */
static napi_value js_reply(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  channel_t *ch = unwrap(env, argv[0]);
  if (!ch) return NULL;
  uint32_t count;
  CHECK(napi_get_value_uint32(env, argv[2], &count));
  if (count > ch->batch) count = ch->batch; /* only senders of the current batch */
  uint32_t k = 0;
  for (uint32_t i = 0; i < count; i++) {
    napi_value v;
    CHECK(napi_get_element(env, argv[1], i, &v));
    bool is_buffer = false;
    napi_is_buffer(env, v, &is_buffer);
    if (!is_buffer) continue;
    void *data;
    size_t len;
    CHECK(napi_get_buffer_info(env, v, &data, &len));
    uint8_t *addr = ch->addrs + (size_t)i * ADDR_SLOT;
    int alen = slot_addr_len(addr);
    if (alen < 0 || len == 0) continue;
    ch->out_iov[k].iov_base = data;
    ch->out_iov[k].iov_len = len;
    memset(&ch->out[k].msg_hdr, 0, sizeof ch->out[k].msg_hdr);
    ch->out[k].msg_hdr.msg_iov = &ch->out_iov[k];
    ch->out[k].msg_hdr.msg_iovlen = 1;
    ch->out[k].msg_hdr.msg_name = addr;
    ch->out[k].msg_hdr.msg_namelen = (socklen_t)alen;
    k++;
  }
  uint32_t done = 0, dropped = 0;
  while (done < k) {
    int m = sendmmsg(ch->fd, ch->out + done, k - done, MSG_DONTWAIT);
    if (m > 0) {
      done += (uint32_t)m;
      continue;
    }
    if (m < 0 && errno == EINTR) continue;
    /* EAGAIN or an error for the first message left: drop that one and go on with the rest. */
    dropped++;
    done++;
  }
  ch->send_dropped += dropped;
  ch->sent += k - dropped;
  return NULL;
}

/* sendTo(channel, buf, addrs, offset): one datagram to a sockaddr copied from a slot earlier. */
static napi_value js_send_to(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  channel_t *ch = unwrap(env, argv[0]);
  if (!ch) return NULL;
  void *data, *addrs;
  size_t len, alen_bytes;
  uint32_t off;
  CHECK(napi_get_buffer_info(env, argv[1], &data, &len));
  CHECK(napi_get_buffer_info(env, argv[2], &addrs, &alen_bytes));
  CHECK(napi_get_value_uint32(env, argv[3], &off));
  if ((size_t)off + ADDR_SLOT > alen_bytes) {
    napi_throw_range_error(env, "FERRY_NATIVE", "sendTo: address out of range");
    return NULL;
  }
  uint8_t *addr = (uint8_t *)addrs + off;
  int alen = slot_addr_len(addr);
  if (alen < 0) return NULL;
  ssize_t r;
  do r = sendto(ch->fd, data, len, MSG_DONTWAIT, (struct sockaddr *)addr, (socklen_t)alen);
  while (r < 0 && errno == EINTR);
  if (r < 0) ch->send_dropped++;
  else ch->sent++;
  return NULL;
}

/* peer(addrs, offset) -> [address, port] of a raw sockaddr. */
static napi_value js_peer(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  void *addrs;
  size_t bytes;
  uint32_t off;
  CHECK(napi_get_buffer_info(env, argv[0], &addrs, &bytes));
  CHECK(napi_get_value_uint32(env, argv[1], &off));
  if ((size_t)off + ADDR_SLOT > bytes) {
    napi_throw_range_error(env, "FERRY_NATIVE", "peer: address out of range");
    return NULL;
  }
  const uint8_t *a = (const uint8_t *)addrs + off;
  char text[INET6_ADDRSTRLEN] = "";
  int port = 0;
  sa_family_t f;
  memcpy(&f, a, sizeof f);
  if (f == AF_INET) {
    struct sockaddr_in s;
    memcpy(&s, a, sizeof s);
    inet_ntop(AF_INET, &s.sin_addr, text, sizeof text);
    port = ntohs(s.sin_port);
  } else if (f == AF_INET6) {
    struct sockaddr_in6 s;
    memcpy(&s, a, sizeof s);
    if (IN6_IS_ADDR_V4MAPPED(&s.sin6_addr)) inet_ntop(AF_INET, &s.sin6_addr.s6_addr[12], text, sizeof text);
    else inet_ntop(AF_INET6, &s.sin6_addr, text, sizeof text);
    port = ntohs(s.sin6_port);
  }
  napi_value out, vaddr, vport;
  CHECK(napi_create_array_with_length(env, 2, &out));
  CHECK(napi_create_string_utf8(env, text, NAPI_AUTO_LENGTH, &vaddr));
  CHECK(napi_create_int32(env, port, &vport));
  CHECK(napi_set_element(env, out, 0, vaddr));
  CHECK(napi_set_element(env, out, 1, vport));
  return out;
}

/* stats(channel) -> { received, sent, truncated, sendDropped, recvErrors, batches } */
static napi_value js_stats(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  channel_t *ch = unwrap(env, argv[0]);
  if (!ch) return NULL;
  napi_value out, v;
  CHECK(napi_create_object(env, &out));
  const char *names[] = {"received", "sent", "truncated", "sendDropped", "recvErrors", "batches"};
  double vals[] = {ch->received, ch->sent, ch->truncated, ch->send_dropped, ch->recv_errors, ch->batches};
  for (int i = 0; i < 6; i++) {
    CHECK(napi_create_double(env, vals[i], &v));
    CHECK(napi_set_named_property(env, out, names[i], v));
  }
  return out;
}

/*
 * close(channel): stops polling and closes the socket. Idempotent. The record is freed once libuv
 * has closed the poll handle, so the wrap is removed here: later calls find no channel ("channel
 * is closed") instead of reading freed memory.
 */
static napi_value js_close(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  channel_t *ch = NULL;
  if (napi_remove_wrap(env, argv[0], (void **)&ch) == napi_ok && ch) shut(ch);
  return NULL;
}

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"bind", NULL, js_bind, NULL, NULL, NULL, napi_default, NULL},
      {"spread", NULL, js_spread, NULL, NULL, NULL, napi_default, NULL},
      {"open", NULL, js_open, NULL, NULL, NULL, napi_default, NULL},
      {"reply", NULL, js_reply, NULL, NULL, NULL, napi_default, NULL},
      {"sendTo", NULL, js_send_to, NULL, NULL, NULL, napi_default, NULL},
      {"peer", NULL, js_peer, NULL, NULL, NULL, napi_default, NULL},
      {"stats", NULL, js_stats, NULL, NULL, NULL, napi_default, NULL},
      {"close", NULL, js_close, NULL, NULL, NULL, napi_default, NULL},
      {"closeFd", NULL, js_close_fd, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_value addr_slot;
  napi_create_int32(env, ADDR_SLOT, &addr_slot);
  napi_set_named_property(env, exports, "ADDR_SLOT", addr_slot);
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)

/*
 * The userspace relay's native data plane (src/relay/native-relay.ts): accepts TCP on listening
 * sockets, connects to the current upstream, optionally writes a PROXY protocol header, then
 * copies bytes both ways. Every decision the orchestrator makes (upstream, hold, release, drain)
 * stays in TypeScript; this file is only the per-connection I/O.
 *
 * Why native: `npm run bench:relay` (wrk against nginx, 2 CPUs, one worker per CPU) measured the
 * TypeScript relay at 0.42x HAProxy's requests/s with one new connection per request and
 * 0.64-0.84x with keep-alive. A profile put about 400 us of CPU per new connection in Node's
 * net.Socket machinery (handle wraps, stream state, per-socket callbacks, timers), against about
 * 115 us for the whole of HAProxy; the TypeScript relay had nothing left to remove. No npm package
 * relays TCP below Node's stream layer (they all pipe net.Sockets), so this file does, in the
 * style of native/dns-udp: plain C, N-API, no threads.
 *
 * Model: one epoll set per relay, itself watched by uv_poll on Node's loop; when it is readable,
 * epoll_wait(timeout 0) takes at most MAX_EVENTS events, MAX_ROUNDS times per wake-up, so the
 * rest of the loop (IPC, timers) is never starved. Level-triggered throughout. With several
 * worker processes on one listening socket, each watches it and they race for the accepts (see
 * listener_watch). A direction is relayed by reading at most BUF_SIZE bytes into a
 * shared scratch buffer and writing them to the other side at once; only what the other side
 * cannot take is copied into a buffer of the connection (from a free list), and the reading side
 * is then unwatched until that buffer is written (backpressure): an idle or flowing connection
 * holds no buffer. A side whose work is done (nothing to read, nothing to write) is removed from
 * the epoll set, so a half-closed socket never spins. Half-close: EOF from one side becomes
 * shutdown(SHUT_WR) on the other once its pending bytes are written; the connection closes when
 * both directions are done. An error on either side resets both. Timeouts (connect, idle, hold,
 * the 2 s linger of a gently closed client) are checked by one uv_timer sweep, as in
 * tcp-relay.ts. Connection records are recycled through a free list and freed only after the
 * batch of events that might still name them.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <node_api.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#include "ferry_napi.h"

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

#define BUF_SIZE 16384       /* bytes read per system call, and the size of a pending buffer */
#define MAX_EVENTS 256       /* events per epoll_wait */
#define MAX_ROUNDS 4         /* epoll_waits per wake-up */
#define ACCEPT_BATCH 16      /* accepts per listener event */
#define READS_PER_EVENT 4    /* reads per readable event, while each fills the buffer */
#define LINGER_MS 2000       /* a gently closed client is freed after this at the latest */
#define MAX_FREE_BUFS 256    /* pending buffers kept for reuse */
#define MAX_FREE_CONNS 4096  /* connection records kept for reuse */
#define STATS_HEAD 8         /* relay-wide values before the per-listener ones in stats() */
#define STATS_PER_LISTENER 5

enum { ST_FREE = 0, ST_NEW, ST_HELD, ST_CONNECTING, ST_OPEN, ST_LINGER };
enum { TAG_CLIENT = 0, TAG_UPSTREAM = 1, TAG_LISTENER = 2, TAG_MASK = 3 };


typedef struct {
  int fd;
  uint32_t mask;  /* events registered in the epoll set; 0 = not in it */
  uint8_t eof;    /* read 0 from this socket */
  uint8_t shut;   /* we shut down writing on this socket */
  char *out;      /* bytes waiting to be written to this socket (a BUF_SIZE buffer), or NULL */
  uint32_t off, len;
} side_t;

struct relay;

typedef struct conn {
  struct relay *r;
  struct conn *prev, *next; /* every live connection */
  struct conn *qnext;       /* hold queue, dead list or free list */
  side_t c, u;              /* client and upstream */
  uint32_t listener;
  uint8_t state;
  uint8_t active;           /* counted in activeConnections */
  uint64_t since;           /* loop ms: held, connect started, linger started */
  uint64_t last;            /* loop ms of the last bytes read */
  addr_t peer, local;       /* client endpoints, kept for the PROXY header */
} conn_t;

typedef struct {
  struct relay *r;
  int fd;
  int port;
  int paused; /* out of the epoll set after EMFILE; the sweep adds it back */
  double active, total, to_upstream, to_client, last_at;
} listener_t;

typedef struct relay {
  napi_env env;
  int epfd;
  int closed;
  int handles;   /* uv handles not yet closed */
  int finalized; /* the JavaScript object is gone */
  uv_poll_t poll;
  uv_timer_t timer;
  napi_ref self, on_event;
  napi_async_context actx;
  listener_t *ls;
  uint32_t nls;
  int own_fds;
  addr_t up;
  int up_port; /* 0: the port the connection arrived on */
  addr_t src;
  int has_src;
  int proxy; /* 0, 1 or 2 */
  uint32_t hold_limit, max_conns;
  uint64_t max_hold, connect_to, idle_to;
  int holding;
  conn_t *all;
  uint32_t nconns;
  conn_t *qhead, *qtail;
  uint32_t held;
  conn_t *dead;
  conn_t *free_conns;
  uint32_t nfree_conns;
  char *free_bufs[MAX_FREE_BUFS];
  uint32_t nfree_bufs;
  int want_idle; /* JavaScript waits for activeConnections to reach 0 */
  int idle_due;
  double active, upstream_failures, rejected, hold_expired, idle_timeouts;
  uint64_t now;
  char scratch[BUF_SIZE];
} relay_t;

static double epoch_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_REALTIME, &ts);
  return (double)ts.tv_sec * 1000.0 + (double)(ts.tv_nsec / 1000000);
}

/* ---- PROXY protocol (must produce the bytes of src/relay/proxy-protocol.ts encodeProxyHeader) ---- */

static const uint8_t V2_SIG[12] = {0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a};

/* The IPv4 address of `a` if it is IPv4 or v4-mapped IPv6 (as unmapIPv4 does); else 0. */
static int as_v4(const addr_t *a, uint8_t out[4]) {
  if (a->sa.sa_family == AF_INET) {
    memcpy(out, &a->in4.sin_addr, 4);
    return 1;
  }
  if (IN6_IS_ADDR_V4MAPPED(&a->in6.sin6_addr)) {
    memcpy(out, &a->in6.sin6_addr.s6_addr[12], 4);
    return 1;
  }
  return 0;
}

/* `a` as 16 IPv6 bytes, an IPv4 address v4-mapped. */
static void as_v6(const addr_t *a, uint8_t out[16]) {
  uint8_t v4[4];
  if (as_v4(a, v4)) {
    memset(out, 0, 10);
    out[10] = out[11] = 0xff;
    memcpy(out + 12, v4, 4);
  } else {
    memcpy(out, &a->in6.sin6_addr, 16);
  }
}

/* Writes the header for client `src` → `dst` into out (>= 108 bytes); returns its length. */
static int encode_proxy(int version, const addr_t *src, const addr_t *dst, uint8_t *out) {
  uint8_t s4[4], d4[4];
  int v4 = as_v4(src, s4) && as_v4(dst, d4);
  int sport = addr_port(src), dport = addr_port(dst);
  if (version == 1) {
    char s[INET6_ADDRSTRLEN], d[INET6_ADDRSTRLEN];
    if (v4) {
      inet_ntop(AF_INET, s4, s, sizeof s);
      inet_ntop(AF_INET, d4, d, sizeof d);
    } else {
      uint8_t s6[16], d6[16];
      as_v6(src, s6);
      as_v6(dst, d6);
      inet_ntop(AF_INET6, s6, s, sizeof s);
      inet_ntop(AF_INET6, d6, d, sizeof d);
    }
    return snprintf((char *)out, 108, "PROXY %s %s %s %d %d\r\n", v4 ? "TCP4" : "TCP6", s, d, sport, dport);
  }
  memcpy(out, V2_SIG, 12);
  out[12] = 0x21; /* version 2, command PROXY */
  out[13] = v4 ? 0x11 : 0x21;
  int alen = v4 ? 12 : 36;
  out[14] = 0;
  out[15] = (uint8_t)alen;
  if (v4) {
    memcpy(out + 16, s4, 4);
    memcpy(out + 20, d4, 4);
    out[24] = (uint8_t)(sport >> 8), out[25] = (uint8_t)sport;
    out[26] = (uint8_t)(dport >> 8), out[27] = (uint8_t)dport;
  } else {
    as_v6(src, out + 16);
    as_v6(dst, out + 32);
    out[48] = (uint8_t)(sport >> 8), out[49] = (uint8_t)sport;
    out[50] = (uint8_t)(dport >> 8), out[51] = (uint8_t)dport;
  }
  return 16 + alen;
}

/* ---- buffers and connection records ---- */

static char *buf_get(relay_t *r) {
  if (r->nfree_bufs > 0) return r->free_bufs[--r->nfree_bufs];
  return malloc(BUF_SIZE);
}

static void buf_put(relay_t *r, char *b) {
  if (!b) return;
  if (r->nfree_bufs < MAX_FREE_BUFS) r->free_bufs[r->nfree_bufs++] = b;
  else free(b);
}

static conn_t *conn_new(relay_t *r) {
  conn_t *c = r->free_conns;
  if (c) {
    r->free_conns = c->qnext;
    r->nfree_conns--;
  } else {
    c = malloc(sizeof *c);
    if (!c) return NULL;
  }
  memset(c, 0, offsetof(conn_t, peer));
  c->r = r;
  c->state = ST_NEW;
  c->c.fd = c->u.fd = -1;
  c->next = r->all;
  if (r->all) r->all->prev = c;
  r->all = c;
  r->nconns++;
  return c;
}

/* Frees the records of connections closed during the last batch of events. */
static void reap(relay_t *r) {
  while (r->dead) {
    conn_t *c = r->dead;
    r->dead = c->qnext;
    if (r->nfree_conns < MAX_FREE_CONNS && !r->closed) {
      c->qnext = r->free_conns;
      r->free_conns = c;
      r->nfree_conns++;
    } else {
      free(c);
    }
  }
}

/* ---- epoll interest ---- */

static void set_mask(relay_t *r, conn_t *c, side_t *s, int tag, uint32_t mask) {
  if (s->fd < 0 || s->mask == mask) return;
  struct epoll_event ev = {.events = mask, .data.u64 = (uint64_t)(uintptr_t)c | (uint64_t)tag};
  int op = mask == 0 ? EPOLL_CTL_DEL : s->mask == 0 ? EPOLL_CTL_ADD : EPOLL_CTL_MOD;
  if (epoll_ctl(r->epfd, op, s->fd, &ev) == 0 || op == EPOLL_CTL_DEL) s->mask = mask;
}

/* Registers what each side of `c` waits for, given its state. */
static void update(conn_t *c) {
  relay_t *r = c->r;
  uint32_t cm = 0, um = 0;
  switch (c->state) {
    case ST_CONNECTING:
      um = EPOLLOUT;
      break;
    case ST_OPEN:
      cm = (!c->c.eof && c->u.len == 0 ? EPOLLIN : 0) | (c->c.len ? EPOLLOUT : 0);
      um = (!c->u.eof && c->c.len == 0 ? EPOLLIN : 0) | (c->u.len ? EPOLLOUT : 0);
      break;
    case ST_LINGER:
      cm = EPOLLIN;
      break;
  }
  set_mask(r, c, &c->c, TAG_CLIENT, cm);
  set_mask(r, c, &c->u, TAG_UPSTREAM, um);
}

/* ---- connection life cycle ---- */

static void leave_active(conn_t *c) {
  if (!c->active) return;
  relay_t *r = c->r;
  c->active = 0;
  r->active--;
  r->ls[c->listener].active--;
  if (r->active == 0) r->idle_due = 1;
}

static void close_side(side_t *s, int reset) {
  if (s->fd >= 0) {
    if (reset) {
      struct linger lg = {1, 0};
      setsockopt(s->fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    }
    close(s->fd); /* also removes it from the epoll set */
  }
  s->fd = -1;
  s->mask = 0;
}

static void dequeue(relay_t *r, conn_t *c) {
  conn_t **p = &r->qhead, *prev = NULL;
  while (*p && *p != c) {
    prev = *p;
    p = &(*p)->qnext;
  }
  if (!*p) return;
  *p = c->qnext;
  if (r->qtail == c) r->qtail = prev;
  r->held--;
}

/* Closes both sockets and retires the record; `reset` sends RSTs (errors). */
static void conn_free(conn_t *c, int reset) {
  relay_t *r = c->r;
  if (c->state == ST_FREE) return;
  if (c->state == ST_HELD) dequeue(r, c);
  leave_active(c);
  close_side(&c->c, reset);
  close_side(&c->u, reset);
  buf_put(r, c->c.out);
  buf_put(r, c->u.out);
  c->c.out = c->u.out = NULL;
  c->state = ST_FREE;
  if (c->prev) c->prev->next = c->next;
  else r->all = c->next;
  if (c->next) c->next->prev = c->prev;
  r->nconns--;
  c->qnext = r->dead;
  r->dead = c;
}

/* Ends the client gently (FIN, not RST): reads and discards what it still sends, then closes. */
static void linger_client(conn_t *c) {
  relay_t *r = c->r;
  leave_active(c);
  close_side(&c->u, 0);
  buf_put(r, c->c.out);
  buf_put(r, c->u.out);
  c->c.out = c->u.out = NULL;
  c->c.len = c->u.len = 0;
  c->state = ST_LINGER;
  c->since = r->now;
  if (shutdown(c->c.fd, SHUT_WR) < 0) {
    conn_free(c, 0);
    return;
  }
  update(c);
}

static void connect_failed(conn_t *c) {
  c->r->upstream_failures++;
  linger_client(c);
}

/* Writes the pending bytes of side `s` (returning the buffer once empty); returns -1 on error. */
static int flush(relay_t *r, side_t *s) {
  while (s->len > 0) {
    ssize_t w = send(s->fd, s->out + s->off, s->len, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (w < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) return 0;
      return -1;
    }
    s->off += (uint32_t)w;
    s->len -= (uint32_t)w;
  }
  buf_put(r, s->out); /* an idle connection holds no buffer */
  s->out = NULL;
  return 0;
}

/* Sends `n` bytes to `s`, keeping what it cannot take now; returns -1 on error. */
static int send_or_keep(relay_t *r, side_t *s, const char *data, uint32_t n) {
  ssize_t w;
  do w = send(s->fd, data, n, MSG_NOSIGNAL | MSG_DONTWAIT);
  while (w < 0 && errno == EINTR);
  if (w < 0) {
    if (errno != EAGAIN && errno != EWOULDBLOCK) return -1;
    w = 0;
  }
  if ((uint32_t)w < n) {
    if (!s->out) s->out = buf_get(r);
    if (!s->out) return -1;
    memcpy(s->out, data + w, n - (uint32_t)w);
    s->off = 0;
    s->len = n - (uint32_t)w;
  }
  return 0;
}

static void opened(conn_t *c) {
  relay_t *r = c->r;
  c->state = ST_OPEN;
  c->last = r->now;
  if (r->proxy) {
    uint8_t hdr[112];
    int n = encode_proxy(r->proxy, &c->peer, &c->local, hdr);
    if (n <= 0 || send_or_keep(r, &c->u, (const char *)hdr, (uint32_t)n) < 0) {
      conn_free(c, 1);
      return;
    }
  }
  update(c);
}

static void connect_upstream(conn_t *c) {
  relay_t *r = c->r;
  listener_t *l = &r->ls[c->listener];
  c->state = ST_CONNECTING;
  c->since = r->now;
  c->active = 1;
  r->active++;
  l->active++;
  addr_t to = r->up;
  int port = r->up_port ? r->up_port : l->port;
  if (to.sa.sa_family == AF_INET6) to.in6.sin6_port = htons((uint16_t)port);
  else to.in4.sin_port = htons((uint16_t)port);
  int fd = socket(to.sa.sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    connect_failed(c);
    return;
  }
  c->u.fd = fd;
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  if (r->has_src) {
    /* Lets source ports be shared between destinations (bind without reserving a port). */
    setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
    if (bind(fd, &r->src.sa, addr_len(&r->src)) < 0) {
      connect_failed(c);
      return;
    }
  }
  int rc;
  do rc = connect(fd, &to.sa, addr_len(&to));
  while (rc < 0 && errno == EINTR);
  if (rc == 0) opened(c);
  else if (errno == EINPROGRESS) update(c);
  else connect_failed(c);
}

static void route(conn_t *c) {
  relay_t *r = c->r;
  if (!r->holding) {
    connect_upstream(c);
    return;
  }
  if (r->held >= r->hold_limit) {
    r->rejected++;
    conn_free(c, 0);
    return;
  }
  c->state = ST_HELD;
  c->since = r->now;
  c->qnext = NULL;
  if (r->qtail) r->qtail->qnext = c;
  else r->qhead = c;
  r->qtail = c;
  r->held++;
}

/*
 * Not EPOLLEXCLUSIVE: with it the kernel kept waking the same worker, which took a whole burst
 * of connects (measured 1/64 and 16/48 over two workers for wrk's 64 keep-alive connections, so
 * one core relayed nearly everything). Woken together, the workers race for the accepts and a
 * busy one takes fewer; the loser's accept4 returns EAGAIN, which costs microseconds.
 */
static void listener_watch(relay_t *r, listener_t *l, int on) {
  struct epoll_event ev = {.events = EPOLLIN, .data.u64 = (uint64_t)(uintptr_t)l | TAG_LISTENER};
  epoll_ctl(r->epfd, on ? EPOLL_CTL_ADD : EPOLL_CTL_DEL, l->fd, &ev);
}

static void accept_ready(relay_t *r, listener_t *l) {
  double at = 0;
  for (int i = 0; i < ACCEPT_BATCH; i++) {
    addr_t peer;
    socklen_t plen = sizeof peer;
    int fd = accept4(l->fd, &peer.sa, &plen, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      if (errno == EINTR || errno == ECONNABORTED || errno == EPROTO) continue;
      if (errno == EMFILE || errno == ENFILE || errno == ENOBUFS || errno == ENOMEM) {
        /* Out of descriptors: stop accepting until the next sweep instead of spinning. */
        listener_watch(r, l, 0);
        l->paused = 1;
      }
      return;
    }
    if (r->nconns >= r->max_conns) {
      r->rejected++;
      close(fd);
      continue;
    }
    conn_t *c = conn_new(r);
    if (!c) {
      r->rejected++;
      close(fd);
      continue;
    }
    c->c.fd = fd;
    c->listener = (uint32_t)(l - r->ls);
    l->total++;
    if (at == 0) at = epoch_ms();
    l->last_at = at;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (r->proxy) {
      c->peer = peer;
      socklen_t llen = sizeof c->local;
      if (getsockname(fd, &c->local.sa, &llen) < 0) c->local = peer;
    }
    route(c);
  }
}

/* Reads from `x` and writes to `y`; returns -1 on error. */
static int pump(relay_t *r, conn_t *c, side_t *x, side_t *y) {
  listener_t *l = &r->ls[c->listener];
  for (int i = 0; i < READS_PER_EVENT && y->len == 0; i++) {
    ssize_t n = recv(x->fd, r->scratch, BUF_SIZE, 0);
    if (n > 0) {
      c->last = r->now;
      if (x == &c->c) l->to_upstream += (double)n;
      else l->to_client += (double)n;
      if (send_or_keep(r, y, r->scratch, (uint32_t)n) < 0) return -1;
      if (n < BUF_SIZE) return 0;
    } else if (n == 0) {
      x->eof = 1;
      return 0;
    } else {
      if (errno == EINTR) continue;
      return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : -1;
    }
  }
  return 0;
}

/* After I/O: pass FINs on, close a finished connection, else re-register interest. */
static void settle(conn_t *c) {
  if (c->c.eof && c->u.len == 0 && !c->u.shut) {
    shutdown(c->u.fd, SHUT_WR);
    c->u.shut = 1;
  }
  if (c->u.eof && c->c.len == 0 && !c->c.shut) {
    shutdown(c->c.fd, SHUT_WR);
    c->c.shut = 1;
  }
  if (c->c.eof && c->u.eof && c->c.shut && c->u.shut) conn_free(c, 0);
  else update(c);
}

static void on_conn_event(relay_t *r, conn_t *c, int tag, uint32_t ev) {
  side_t *x = tag == TAG_CLIENT ? &c->c : &c->u;
  side_t *y = tag == TAG_CLIENT ? &c->u : &c->c;
  if (x->fd < 0) return; /* closed earlier in this batch */
  switch (c->state) {
    case ST_CONNECTING: {
      if (tag != TAG_UPSTREAM) return;
      int err = 0;
      socklen_t len = sizeof err;
      if (getsockopt(x->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0) err = errno;
      if (err == 0 && (ev & EPOLLOUT) && !(ev & EPOLLERR)) opened(c);
      else if (err != 0 || (ev & (EPOLLERR | EPOLLHUP))) connect_failed(c);
      return;
    }
    case ST_LINGER: {
      if (tag != TAG_CLIENT) return;
      for (int i = 0; i < READS_PER_EVENT; i++) {
        ssize_t n = recv(x->fd, r->scratch, BUF_SIZE, 0);
        if (n > 0) continue;
        if (n < 0 && errno == EINTR) continue;
        if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK)) conn_free(c, 0);
        return;
      }
      return;
    }
    case ST_OPEN:
      break;
    default:
      return;
  }
  if (ev & EPOLLERR) {
    conn_free(c, 1);
    return;
  }
  if ((ev & (EPOLLOUT | EPOLLHUP)) && x->len > 0) {
    if (flush(r, x) < 0) {
      conn_free(c, 1);
      return;
    }
  }
  if ((ev & (EPOLLIN | EPOLLHUP)) && (x->mask & EPOLLIN) && !x->eof) {
    if (pump(r, c, x, y) < 0) {
      conn_free(c, 1);
      return;
    }
  }
  settle(c);
}

static void call_js(relay_t *r, int kind) {
  napi_env env = r->env;
  napi_handle_scope scope;
  napi_open_handle_scope(env, &scope);
  napi_value self, cb, arg, result;
  napi_get_reference_value(env, r->self, &self);
  napi_get_reference_value(env, r->on_event, &cb);
  napi_create_int32(env, kind, &arg);
  napi_status st = napi_make_callback(env, r->actx, self, cb, 1, &arg, &result);
  if (st == napi_pending_exception) {
    napi_value exc;
    napi_get_and_clear_last_exception(env, &exc);
    napi_fatal_exception(env, exc);
  }
  napi_close_handle_scope(env, scope);
}

/* End of a batch: free dead records, tell JavaScript if a drain waits and nothing is active. */
static void after_batch(relay_t *r) {
  reap(r);
  if (r->idle_due && r->want_idle && r->active == 0 && !r->closed) {
    r->want_idle = 0;
    r->idle_due = 0;
    call_js(r, 1);
  }
  r->idle_due = 0;
}

static void on_poll(uv_poll_t *handle, int status, int events) {
  relay_t *r = handle->data;
  struct epoll_event evs[MAX_EVENTS];
  (void)status;
  (void)events;
  if (r->closed) return;
  r->now = uv_now(handle->loop);
  for (int round = 0; round < MAX_ROUNDS && !r->closed; round++) {
    int n = epoll_wait(r->epfd, evs, MAX_EVENTS, 0);
    for (int i = 0; i < n && !r->closed; i++) {
      uint64_t d = evs[i].data.u64;
      int tag = (int)(d & TAG_MASK);
      void *p = (void *)(uintptr_t)(d & ~(uint64_t)TAG_MASK);
      if (tag == TAG_LISTENER) {
        listener_t *l = p;
        if (!l->paused) accept_ready(r, l);
      } else {
        conn_t *c = p;
        if (c->state != ST_FREE) on_conn_event(r, c, tag, evs[i].events);
      }
    }
    reap(r);
    if (n < MAX_EVENTS) break;
  }
  after_batch(r);
}

/* Timeouts of every connection, and listeners paused by EMFILE; see the file comment. */
static void on_timer(uv_timer_t *t) {
  relay_t *r = t->data;
  if (r->closed) return;
  r->now = uv_now(t->loop);
  for (uint32_t i = 0; i < r->nls; i++) {
    if (r->ls[i].paused) {
      r->ls[i].paused = 0;
      listener_watch(r, &r->ls[i], 1);
    }
  }
  while (r->qhead && r->now - r->qhead->since >= r->max_hold) {
    conn_t *c = r->qhead;
    dequeue(r, c);
    r->hold_expired++;
    linger_client(c);
  }
  for (conn_t *c = r->all, *next; c; c = next) {
    next = c->next;
    if (c->state == ST_CONNECTING) {
      if (r->now - c->since >= r->connect_to) connect_failed(c);
    } else if (c->state == ST_OPEN) {
      if (r->idle_to > 0 && r->now - c->last >= r->idle_to) {
        r->idle_timeouts++;
        conn_free(c, 0);
      }
    } else if (c->state == ST_LINGER) {
      if (r->now - c->since >= LINGER_MS) conn_free(c, 0);
    }
  }
  after_batch(r);
}

/* ---- teardown ---- */

static void free_relay(relay_t *r) {
  reap(r);
  while (r->free_conns) {
    conn_t *c = r->free_conns;
    r->free_conns = c->qnext;
    free(c);
  }
  for (uint32_t i = 0; i < r->nfree_bufs; i++) free(r->free_bufs[i]);
  free(r->ls);
  free(r);
}

static void on_handle_closed(uv_handle_t *h) {
  relay_t *r = h->data;
  if (--r->handles == 0 && r->finalized) free_relay(r);
}

static void finalize(napi_env env, void *data, void *hint) {
  relay_t *r = data;
  (void)env;
  (void)hint;
  r->finalized = 1;
  if (r->handles == 0) free_relay(r);
}

static void shut(relay_t *r) {
  if (r->closed) return;
  r->closed = 1;
  uv_poll_stop(&r->poll);
  uv_timer_stop(&r->timer);
  r->qhead = r->qtail = NULL; /* emptied first, so freeing a held connection need not search it */
  r->held = 0;
  while (r->all) conn_free(r->all, 0);
  for (uint32_t i = 0; i < r->nls; i++) {
    if (r->own_fds) close(r->ls[i].fd);
  }
  close(r->epfd); /* unregisters the inherited listening sockets too */
  reap(r);
  napi_env env = r->env;
  napi_delete_reference(env, r->on_event);
  napi_delete_reference(env, r->self);
  napi_async_destroy(env, r->actx);
  uv_close((uv_handle_t *)&r->poll, on_handle_closed);
  uv_close((uv_handle_t *)&r->timer, on_handle_closed);
}

/* ---- JavaScript API ---- */

static relay_t *unwrap(napi_env env, napi_value v) {
  relay_t *r = NULL;
  if (napi_unwrap(env, v, (void **)&r) != napi_ok || r == NULL || r->closed) {
    napi_throw_error(env, "FERRY_NATIVE", "relay is closed");
    return NULL;
  }
  return r;
}

static int get_str(napi_env env, napi_value obj, const char *name, char *out, size_t size) {
  napi_value v;
  size_t len = 0;
  out[0] = 0;
  if (napi_get_named_property(env, obj, name, &v) != napi_ok) return -1;
  if (napi_get_value_string_utf8(env, v, out, size, &len) != napi_ok) return -1;
  return (int)len;
}

static double get_num(napi_env env, napi_value obj, const char *name, double def) {
  napi_value v;
  double d;
  if (napi_get_named_property(env, obj, name, &v) != napi_ok) return def;
  if (napi_get_value_double(env, v, &d) != napi_ok) return def;
  return d;
}

/* bind(host, port) -> [fd, boundPort]: a listening TCP socket (IPv6 sockets IPv6-only, like Node's ipv6Only). */
static napi_value js_bind(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  char host[64];
  size_t hlen;
  int32_t port;
  CHECK(napi_get_value_string_utf8(env, argv[0], host, sizeof host, &hlen));
  CHECK(napi_get_value_int32(env, argv[1], &port));
  addr_t a;
  int family = parse_addr(host, port, &a);
  if (family < 0) {
    napi_throw_type_error(env, "FERRY_NATIVE", "bind: not an IP address");
    return NULL;
  }
  int fd = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  if (fd < 0) return throw_errno(env, "socket", errno);
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (family == AF_INET6) setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof one);
  if (bind(fd, &a.sa, addr_len(&a)) < 0 || listen(fd, 4096) < 0) {
    int e = errno;
    close(fd);
    return throw_errno(env, "bind", e);
  }
  return fd_and_port(env, fd);
}

static int set_upstream(relay_t *r, const char *host, int port) {
  addr_t a;
  if (parse_addr(host, port, &a) < 0) return -1;
  r->up = a;
  r->up_port = port;
  return 0;
}

/* A create() that fails before any uv handle exists: frees what it made, throws `msg` (if any). */
static napi_value create_failed(napi_env env, relay_t *r, const char *msg) {
  if (r->epfd >= 0) close(r->epfd);
  free(r->ls);
  free(r);
  if (msg) napi_throw_error(env, "FERRY_NATIVE", msg);
  return NULL;
}

/*
 * create(config, fds, onEvent) -> relay. config: { upstreamAddress, upstreamPort (0: the port the
 * connection arrived on), sourceAddress ('' for none), proxy (0|1|2), holdQueueLimit, maxHoldMs,
 * connectTimeoutMs, idleTimeoutMs, maxConnections, sweepMs, ownFds, holding }. onEvent(1): no
 * connection is active any more (after armIdle()).
 */
static napi_value js_create(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  napi_value cfg = argv[0];
  uint32_t nfds;
  CHECK(napi_get_array_length(env, argv[1], &nfds));
  if (nfds == 0 || nfds > 4096) {
    napi_throw_range_error(env, "FERRY_NATIVE", "create: 1 to 4096 listening sockets");
    return NULL;
  }
  relay_t *r = calloc(1, sizeof *r);
  if (!r) {
    napi_throw_error(env, "FERRY_NATIVE", "create: out of memory");
    return NULL;
  }
  r->env = env;
  r->epfd = -1;
  r->ls = calloc(nfds, sizeof *r->ls);
  if (!r->ls) return create_failed(env, r, "create: out of memory");
  r->nls = nfds;
  char host[64];
  if (get_str(env, cfg, "upstreamAddress", host, sizeof host) <= 0 ||
      set_upstream(r, host, (int)get_num(env, cfg, "upstreamPort", 0)) < 0) {
    create_failed(env, r, NULL);
    napi_throw_type_error(env, "FERRY_NATIVE", "create: upstreamAddress is not an IP address");
    return NULL;
  }
  if (get_str(env, cfg, "sourceAddress", host, sizeof host) > 0) {
    if (parse_addr(host, 0, &r->src) < 0) {
      create_failed(env, r, NULL);
      napi_throw_type_error(env, "FERRY_NATIVE", "create: sourceAddress is not an IP address");
      return NULL;
    }
    r->has_src = 1;
  }
  r->proxy = (int)get_num(env, cfg, "proxy", 0);
  r->hold_limit = (uint32_t)get_num(env, cfg, "holdQueueLimit", 4096);
  r->max_hold = (uint64_t)get_num(env, cfg, "maxHoldMs", 30000);
  r->connect_to = (uint64_t)get_num(env, cfg, "connectTimeoutMs", 5000);
  r->idle_to = (uint64_t)get_num(env, cfg, "idleTimeoutMs", 0);
  r->max_conns = (uint32_t)get_num(env, cfg, "maxConnections", 10000);
  r->own_fds = get_num(env, cfg, "ownFds", 0) != 0;
  r->holding = get_num(env, cfg, "holding", 0) != 0;
  uint64_t sweep = (uint64_t)get_num(env, cfg, "sweepMs", 1000);
  if (sweep < 10) sweep = 10;

  r->epfd = epoll_create1(EPOLL_CLOEXEC);
  if (r->epfd < 0) {
    int e = errno;
    create_failed(env, r, NULL);
    return throw_errno(env, "epoll_create1", e);
  }
  for (uint32_t i = 0; i < nfds; i++) {
    napi_value v;
    int32_t fd;
    if (napi_get_element(env, argv[1], i, &v) != napi_ok || napi_get_value_int32(env, v, &fd) != napi_ok)
      return create_failed(env, r, "create: listening sockets must be file descriptor numbers");
    listener_t *l = &r->ls[i];
    l->r = r;
    l->fd = fd;
    addr_t a;
    socklen_t alen = sizeof a;
    if (getsockname(fd, &a.sa, &alen) < 0 || (a.sa.sa_family != AF_INET && a.sa.sa_family != AF_INET6))
      return create_failed(env, r, "create: a listening socket is not an IP socket");
    l->port = addr_port(&a);
    /* Inherited sockets must not block accept when another worker took the connection. */
    int fl = fcntl(fd, F_GETFL);
    if (fl >= 0 && !(fl & O_NONBLOCK)) fcntl(fd, F_SETFL, fl | O_NONBLOCK);
  }
  uv_loop_t *loop;
  if (napi_get_uv_event_loop(env, &loop) != napi_ok || uv_poll_init(loop, &r->poll, r->epfd) != 0)
    return create_failed(env, r, "create: uv_poll_init failed");
  uv_timer_init(loop, &r->timer); /* cannot fail: it only initialises the handle */
  r->now = uv_now(loop);
  r->poll.data = r;
  r->timer.data = r;
  r->handles = 2;
  for (uint32_t i = 0; i < nfds; i++) listener_watch(r, &r->ls[i], 1);
  napi_value obj, name;
  CHECK(napi_create_object(env, &obj));
  CHECK(napi_wrap(env, obj, r, finalize, NULL, NULL));
  CHECK(napi_create_reference(env, obj, 1, &r->self));
  CHECK(napi_create_reference(env, argv[2], 1, &r->on_event));
  CHECK(napi_create_string_utf8(env, "ferry.relay", NAPI_AUTO_LENGTH, &name));
  CHECK(napi_async_init(env, obj, name, &r->actx));
  uv_poll_start(&r->poll, UV_READABLE, on_poll);
  uv_timer_start(&r->timer, on_timer, sweep, sweep);
  uv_unref((uv_handle_t *)&r->timer); /* the listening sockets keep the process alive, not the sweep */
  return obj;
}

/* setUpstream(relay, address, port): port 0 = the port the connection arrived on. */
static napi_value js_set_upstream(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  relay_t *r = unwrap(env, argv[0]);
  if (!r) return NULL;
  char host[64];
  size_t len;
  int32_t port;
  CHECK(napi_get_value_string_utf8(env, argv[1], host, sizeof host, &len));
  CHECK(napi_get_value_int32(env, argv[2], &port));
  if (set_upstream(r, host, port) < 0) napi_throw_type_error(env, "FERRY_NATIVE", "setUpstream: not an IP address");
  return NULL;
}

/* hold(relay): new connections wait in the hold queue. */
static napi_value js_hold(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  relay_t *r = unwrap(env, argv[0]);
  if (r) r->holding = 1;
  return NULL;
}

/* release(relay): stops holding; connects the held connections in arrival order. */
static napi_value js_release(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  relay_t *r = unwrap(env, argv[0]);
  if (!r) return NULL;
  r->holding = 0;
  uv_loop_t *loop;
  CHECK(napi_get_uv_event_loop(env, &loop));
  r->now = uv_now(loop);
  conn_t *q = r->qhead;
  r->qhead = r->qtail = NULL;
  r->held = 0;
  while (q) {
    conn_t *c = q;
    q = c->qnext;
    c->qnext = NULL;
    connect_upstream(c);
  }
  reap(r);
  return NULL;
}

/*
 * stats(relay, out: Float64Array): [active, held, upstreamFailures, rejected, holdExpired,
 * idleTimeouts, connections, 0] then per listener [active, total, bytesToUpstream, bytesToClient,
 * lastConnectionAt (0: none)].
 */
static napi_value js_stats(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  relay_t *r = unwrap(env, argv[0]);
  if (!r) return NULL;
  napi_typedarray_type t;
  size_t len, off;
  void *data;
  napi_value ab;
  CHECK(napi_get_typedarray_info(env, argv[1], &t, &len, &data, &ab, &off));
  if (t != napi_float64_array || len < STATS_HEAD + (size_t)r->nls * STATS_PER_LISTENER) {
    napi_throw_range_error(env, "FERRY_NATIVE", "stats: Float64Array too short");
    return NULL;
  }
  double *o = data;
  o[0] = r->active;
  o[1] = r->held;
  o[2] = r->upstream_failures;
  o[3] = r->rejected;
  o[4] = r->hold_expired;
  o[5] = r->idle_timeouts;
  o[6] = r->nconns;
  o[7] = 0;
  for (uint32_t i = 0; i < r->nls; i++) {
    double *p = o + STATS_HEAD + i * STATS_PER_LISTENER;
    listener_t *l = &r->ls[i];
    p[0] = l->active;
    p[1] = l->total;
    p[2] = l->to_upstream;
    p[3] = l->to_client;
    p[4] = l->last_at;
  }
  return NULL;
}

/* armIdle(relay) -> active connections; when above 0, onEvent(1) follows once they reach 0. */
static napi_value js_arm_idle(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1], out;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  relay_t *r = unwrap(env, argv[0]);
  if (!r) return NULL;
  if (r->active > 0) r->want_idle = 1;
  CHECK(napi_create_double(env, r->active, &out));
  return out;
}

/* close(relay): stops listening (closing the listening sockets only if it owns them) and ends every connection. Idempotent. */
static napi_value js_close(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  relay_t *r = NULL;
  if (napi_unwrap(env, argv[0], (void **)&r) == napi_ok && r) shut(r);
  return NULL;
}

/* encodeProxy(version, srcAddress, srcPort, dstAddress, dstPort) -> Buffer: the data path's encoder, for tests. */
static napi_value js_encode_proxy(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  int32_t version, sport, dport;
  char s[64], d[64];
  size_t len;
  CHECK(napi_get_value_int32(env, argv[0], &version));
  CHECK(napi_get_value_string_utf8(env, argv[1], s, sizeof s, &len));
  CHECK(napi_get_value_int32(env, argv[2], &sport));
  CHECK(napi_get_value_string_utf8(env, argv[3], d, sizeof d, &len));
  CHECK(napi_get_value_int32(env, argv[4], &dport));
  addr_t src, dst;
  if ((version != 1 && version != 2) || parse_addr(s, sport, &src) < 0 || parse_addr(d, dport, &dst) < 0) {
    napi_throw_type_error(env, "FERRY_NATIVE", "encodeProxy: bad version or address");
    return NULL;
  }
  uint8_t hdr[112];
  int n = encode_proxy(version, &src, &dst, hdr);
  napi_value out;
  void *copy;
  CHECK(napi_create_buffer_copy(env, (size_t)n, hdr, &copy, &out));
  return out;
}

static napi_value init(napi_env env, napi_value exports) {
  napi_property_descriptor props[] = {
      {"bind", NULL, js_bind, NULL, NULL, NULL, napi_default, NULL},
      {"closeFd", NULL, js_close_fd, NULL, NULL, NULL, napi_default, NULL},
      {"create", NULL, js_create, NULL, NULL, NULL, napi_default, NULL},
      {"setUpstream", NULL, js_set_upstream, NULL, NULL, NULL, napi_default, NULL},
      {"hold", NULL, js_hold, NULL, NULL, NULL, napi_default, NULL},
      {"release", NULL, js_release, NULL, NULL, NULL, napi_default, NULL},
      {"stats", NULL, js_stats, NULL, NULL, NULL, napi_default, NULL},
      {"armIdle", NULL, js_arm_idle, NULL, NULL, NULL, napi_default, NULL},
      {"close", NULL, js_close, NULL, NULL, NULL, napi_default, NULL},
      {"encodeProxy", NULL, js_encode_proxy, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_value v;
  napi_create_int32(env, STATS_HEAD, &v);
  napi_set_named_property(env, exports, "STATS_HEAD", v);
  napi_create_int32(env, STATS_PER_LISTENER, &v);
  napi_set_named_property(env, exports, "STATS_PER_LISTENER", v);
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)

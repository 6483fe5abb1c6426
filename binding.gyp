# Native parts of Ferry, built by node-gyp at `npm ci` (package.json "install"). Each target is a
# small N-API addon for a hot path where Node 20's own I/O is the measured bottleneck; every one
# has a portable TypeScript fallback (src/common/native.ts, FERRY_NATIVE=0).
{
  "targets": [
    {
      "target_name": "ferry_dns_udp",
      "sources": ["native/dns-udp/udp_batch.c"],
      "include_dirs": ["native/common"],
      "cflags": ["-O2", "-Wall", "-Wextra", "-Wno-unused-parameter"]
    },
    {
      "target_name": "ferry_relay",
      "sources": ["native/relay/relay.c"],
      "include_dirs": ["native/common"],
      "cflags": ["-O2", "-Wall", "-Wextra"]
    }
  ]
}

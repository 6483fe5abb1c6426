/**
 * How long a sandbox's simulated users wait for an answer in the files of the parallel lane
 * (scripts/test-lanes.mjs): beside the serial lane the CPU may be taken for seconds, so a request
 * counts as failed when it fails or hangs, not when it is merely slow (the default is 5 s).
 */
export const PARALLEL_LANE_REQUEST_TIMEOUT_MS = 20_000;

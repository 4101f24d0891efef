/**
 * Limits on one `/api/trpc` request, the same on every path in (the Next route's fetch handler and
 * the agent gateway). No imports: the browser's tRPC client reads MAX_BATCH_CALLS too.
 */

/**
 * The largest request body, in bytes: 413 above it. The biggest thing a client of ours sends is an
 * agent's log batch, at most 500 lines (LOG_BATCH_MAX) of at most 4,096 UTF-16 units (LOG_LINE_MAX),
 * which UTF-8 writes in at most 3 bytes each: about 6 MiB with the JSON around it. Everything else
 * is far smaller. The limit bounds what one request can make the web process hold.
 */
export const MAX_BODY_BYTES = 8 * 1024 * 1024;

/**
 * The most procedure calls in one batch request (`?batch=1`): 400 above it. The busiest page
 * starts fewer than 10 queries at once, and the browser client splits its batches at this size;
 * without a cap, one anonymous request could run `pool.summary` thousands of times.
 */
export const MAX_BATCH_CALLS = 20;

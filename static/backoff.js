// When to try again after the server could not be reached or said "not now" (docs/protocol.md §1.2).
//
// A failed attempt waits a random time between 0 and a ceiling that doubles each
// time, from 0.5 s up to 30 s ("full jitter"): a thousand browsers that lost the
// server at the same moment come back spread out, not all together. A 503 or
// 429 with Retry-After waits what the server said, plus up to half of it more
// at random, for the same reason.

export const BACKOFF_BASE_MS = 500;
export const BACKOFF_MAX_MS = 30_000;
export const RETRY_AFTER_JITTER = 0.5;

/** The wait before attempt number ``attempt + 1`` after ``attempt`` failures in a row (0, 1, 2 …). */
export function backoffDelay(attempt) {
  return Math.random() * Math.min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * 2 ** attempt);
}

/** The wait a refusal asks for (503/429 with Retry-After in seconds), jittered; null if it asks for none. */
export function retryAfterDelay(response) {
  if (response.status !== 503 && response.status !== 429) return null;
  const seconds = Number(response.headers.get("Retry-After"));
  if (!Number.isFinite(seconds) || seconds < 0) return null;
  return seconds * 1000 * (1 + Math.random() * RETRY_AFTER_JITTER);
}

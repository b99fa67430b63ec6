/**
 * Where a broken subscription picks up again, so the caller sees every update exactly once
 * (the same rules as the Python SDK's client/resume.py).
 *
 * The service numbers events with a gap-free sequence and replays every update with sequence
 * >= N on request. Several updates can share a sequence (one fill changes the strategy's row and
 * the account-level row), and a stream can break between them. Because the caller cannot know
 * how many updates a sequence has until a later one (or a heartbeat) arrives, the cursor resumes
 * from the last sequence seen, and drops the updates of that sequence it has already delivered.
 */
export class ResumeCursor {
  // 0 keeps meaning "live only" until something arrives that says where the stream is.
  private resumeFrom: bigint;
  // Every update with a sequence up to here has been delivered (or was not asked for).
  private completeThrough: bigint;
  // The newest sequence delivered, possibly only in part, and how many of its updates.
  private group = 0n;
  private delivered = 0;
  // Updates of `group` seen on the current stream, replayed ones included.
  private seenOnStream = 0;

  constructor(fromSequence: bigint = 0n) {
    if (fromSequence < 0n) throw new RangeError(`fromSequence must be >= 0, got ${fromSequence}`);
    this.resumeFrom = fromSequence;
    this.completeThrough = fromSequence > 0n ? fromSequence - 1n : 0n;
  }

  /** The `from_sequence` for the next subscribe call. */
  get fromSequence(): bigint {
    return this.resumeFrom;
  }

  /** Call when a (re)subscription starts, before its first update. */
  newStream(): void {
    this.seenOnStream = 0;
  }

  /** Records one received update; false when the caller has already seen it. */
  admit(sequence: bigint, heartbeat: boolean): boolean {
    if (heartbeat) {
      // Everything up to `sequence` that matches the filters has been sent.
      if (sequence >= this.group) {
        if (sequence > this.completeThrough) this.completeThrough = sequence;
        this.resumeFrom = this.completeThrough + 1n;
      }
      return true;
    }
    if (sequence <= this.completeThrough || sequence < this.group) return false;
    if (sequence === this.group) {
      this.seenOnStream += 1;
      if (this.seenOnStream <= this.delivered) return false;
      this.delivered += 1;
      return true;
    }
    // A newer sequence: the stream is in order, so everything below it has been sent.
    this.completeThrough = sequence - 1n;
    this.group = sequence;
    this.delivered = 1;
    this.seenOnStream = 1;
    this.resumeFrom = sequence;
    return true;
  }
}

/*
 * msgid - unique 64-bit message ids that sort by time.
 *
 * id = (milliseconds since the epoch << 20) | sequence.  msgid_next() is lock-free
 * and strictly increasing within a process even if the clock steps back;
 * msgid_floor() raises the floor at start-up to the largest id in the spool, so ids
 * also increase across restarts.  Text form: 16 upper-case hex digits, which sorts
 * like the number.
 */
#ifndef VOLLEY_MSGID_H
#define VOLLEY_MSGID_H

#include <stddef.h>
#include <stdint.h>

#define MSGID_STR_LEN 16

/* msgid_next - a new id, greater than every id handed out or floored before */
uint64_t msgid_next(void);
/* msgid_floor - make every later id greater than id */
void msgid_floor(uint64_t id);
/* msgid_format - 16 hex digits + NUL into buf (size >= 17) */
void msgid_format(uint64_t id, char *buf);
/* msgid_parse - parse 16 hex digits (either case); 0 on success, -1 otherwise */
int msgid_parse(const char *s, uint64_t *id);
/* msgid_time_ms - creation time encoded in id */
int64_t msgid_time_ms(uint64_t id);

#endif

/*
 * msg_header - pure RFC 5322 header-section helpers on a message held in memory
 * with CRLF line ends.
 *
 * Used at injection to take off control headers (X-Volley-Campaign, later
 * X-Volley-Pool) and to check the header section.  Works on caller-owned buffers,
 * allocates nothing, never reads past the given length; fuzzed
 * (tests/fuzz/fuzz_msg_header.c).
 */
#ifndef VOLLEY_MSG_HEADER_H
#define VOLLEY_MSG_HEADER_H

#include <stddef.h>

/*
 * msg_header_section_len - length of the header section of msg (length len), up to
 * and including the CRLF of the last header line but excluding the empty line that
 * ends the section.  When the message has no empty line, the whole message is the
 * header section.  A message that starts with an empty line has a section of 0.
 */
size_t msg_header_section_len(const char *msg, size_t len);

/*
 * msg_header_take - find the first header field named name (case-insensitive, no
 * colon) in the header section of msg, copy its unfolded value into val (size
 * valsz: leading and trailing white space removed, each fold CRLF removed, so
 * "a\r\n b" becomes "a b"), and remove the whole field - its first line and every
 * continuation line - from msg by moving the rest of the buffer down.  *len is
 * updated.  Returns 1 when taken, 0 when the header is absent (msg unchanged), -1
 * when the value does not fit in val (msg unchanged).  Further occurrences of the
 * same name are left alone: the caller calls again to detect duplicates.
 */
int msg_header_take(char *msg, size_t *len, const char *name, char *val, size_t valsz);

/*
 * msg_header_get - msg_header_take without the removal: the unfolded value of the
 * first field named name in the header section of msg (length len) into val.
 * 1 found, 0 absent, -1 when the value does not fit in valsz.
 */
int msg_header_get(const char *msg, size_t len, const char *name, char *val, size_t valsz);

/*
 * msg_header_count - number of header fields named name (case-insensitive) in the
 * header section of msg.
 */
int msg_header_count(const char *msg, size_t len, const char *name);

#endif

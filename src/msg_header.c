/*
 * msg_header - pure RFC 5322 header-section helpers (see msg_header.h).
 *
 * Owns the notion of "header field" used at injection: a field starts on a line
 * that does not begin with SP or HTAB and runs through every following line that
 * does (its continuation lines).  Lines end in CRLF only; a bare CR or LF is an
 * ordinary octet.  The header section ends before the first empty line.
 *
 * Invariants: no allocation; reads are bounded by the given length (messages are
 * not NUL-terminated and may hold NULs); nothing past the header section is read as
 * a header or ever modified, so body lines that look like fields are safe.  A
 * continuation line at the very top of the message belongs to no field and is
 * skipped.  A name matches "Name:" and also the obsolete "Name :" form (RFC 5322
 * 4.5.3 obs-optional), so a control header cannot slip past take/count - and out to
 * recipients - by putting a space before its colon.
 */
#include "msg_header.h"

#include <limits.h>
#include <stdbool.h>
#include <string.h>

/* msg_header_wsp - SP or HTAB, the only octets that fold a line */
static bool msg_header_wsp(char c)
{
    return c == ' ' || c == '\t';
}

/* msg_header_upper - ASCII upper case of c, locale-free */
static char msg_header_upper(char c)
{
    return (c >= 'a' && c <= 'z') ? (char)(c - 'a' + 'A') : c;
}

/* msg_header_line_end - offset just past the CRLF ending the line at pos, or len */
static size_t msg_header_line_end(const char *msg, size_t len, size_t pos)
{
    while (pos < len) {
        const char *lf = memchr(msg + pos, '\n', len - pos);
        if (lf == NULL) return len;
        size_t at = (size_t)(lf - msg);
        if (at > pos && msg[at - 1] == '\r') return at + 1;
        pos = at + 1;
    }
    return len;
}

size_t msg_header_section_len(const char *msg, size_t len)
{
    size_t pos = 0;
    while (pos < len) {
        if (len - pos >= 2 && msg[pos] == '\r' && msg[pos + 1] == '\n') return pos;
        pos = msg_header_line_end(msg, len, pos);
    }
    return len;
}

/*
 * msg_header_field_next - find the next field at or after *pos within the header
 * section [0, sect); sets [*start, *end) to the field including its continuation
 * lines and final CRLF, and advances *pos to *end.  Returns false when none is left.
 */
static bool msg_header_field_next(const char *msg, size_t sect, size_t *pos, size_t *start,
                                  size_t *end)
{
    size_t p = *pos;
    while (p < sect) {
        size_t e = msg_header_line_end(msg, sect, p);
        if (msg_header_wsp(msg[p])) {
            p = e; /* continuation line with no field above it */
            continue;
        }
        while (e < sect && msg_header_wsp(msg[e]))
            e = msg_header_line_end(msg, sect, e);
        *start = p;
        *end = e;
        *pos = e;
        return true;
    }
    *pos = p;
    return false;
}

/*
 * msg_header_match - if the field at [start, end) is named name (length nlen),
 * return the offset just past its colon, else 0 (a colon is never at offset 0 of a
 * field, since the name is at least one octet).
 */
static size_t msg_header_match(const char *msg, size_t start, size_t end, const char *name,
                               size_t nlen)
{
    if (nlen == 0 || end - start <= nlen) return 0;
    for (size_t i = 0; i < nlen; i++)
        if (msg_header_upper(msg[start + i]) != msg_header_upper(name[i])) return 0;
    size_t i = start + nlen;
    while (i < end && msg_header_wsp(msg[i]))
        i++;
    if (i >= end || msg[i] != ':') return 0;
    return i + 1;
}

/* msg_header_is_crlf - a CRLF pair starts at i and ends before end */
static bool msg_header_is_crlf(const char *msg, size_t i, size_t end)
{
    return end - i >= 2 && msg[i] == '\r' && msg[i + 1] == '\n';
}

/*
 * msg_header_value - unfold and trim the value at [vs, ve) into val.  Within a field
 * every CRLF but the last is followed by WSP, so dropping each CRLF pair is exactly
 * unfolding; the white space after a fold is kept.  Trimming treats a CRLF like
 * white space, which removes the final line end.  Returns -1 (val emptied) when the
 * result with its NUL does not fit in valsz.
 */
static int msg_header_value(const char *msg, size_t vs, size_t ve, char *val, size_t valsz)
{
    size_t n = 0;

    for (;;) {
        if (vs < ve && msg_header_wsp(msg[vs]))
            vs++;
        else if (msg_header_is_crlf(msg, vs, ve))
            vs += 2;
        else
            break;
    }
    for (;;) {
        if (ve > vs && msg_header_wsp(msg[ve - 1]))
            ve--;
        else if (ve - vs >= 2 && msg[ve - 2] == '\r' && msg[ve - 1] == '\n')
            ve -= 2;
        else
            break;
    }
    for (size_t i = vs; i < ve; i++) {
        if (msg_header_is_crlf(msg, i, ve)) {
            i++;
            continue;
        }
        n++;
    }
    if (valsz == 0) return -1;
    if (n >= valsz) {
        val[0] = '\0';
        return -1;
    }
    n = 0;
    for (size_t i = vs; i < ve; i++) {
        if (msg_header_is_crlf(msg, i, ve)) {
            i++;
            continue;
        }
        val[n++] = msg[i];
    }
    val[n] = '\0';
    return 0;
}

/*
 * The field is removed by moving the tail of the buffer down over it.  Because the
 * field starts at a line boundary and the octet after it starts a line that is not
 * a continuation (or is the end), every other line keeps its meaning: the count of
 * name drops by exactly one and the section shrinks by exactly the removed length.
 */
int msg_header_get(const char *msg, size_t len, const char *name, char *val, size_t valsz)
{
    size_t nlen = strlen(name);
    size_t sect = msg_header_section_len(msg, len);
    size_t pos = 0, start, end;

    while (msg_header_field_next(msg, sect, &pos, &start, &end)) {
        size_t colon_end = msg_header_match(msg, start, end, name, nlen);
        if (colon_end == 0) continue;
        return msg_header_value(msg, colon_end, end, val, valsz) < 0 ? -1 : 1;
    }
    return 0;
}

int msg_header_take(char *msg, size_t *len, const char *name, char *val, size_t valsz)
{
    size_t nlen = strlen(name);
    size_t sect = msg_header_section_len(msg, *len);
    size_t pos = 0, start, end;

    while (msg_header_field_next(msg, sect, &pos, &start, &end)) {
        size_t colon_end = msg_header_match(msg, start, end, name, nlen);
        if (colon_end == 0) continue;
        if (msg_header_value(msg, colon_end, end, val, valsz) < 0) return -1;
        memmove(msg + start, msg + end, *len - end);
        *len -= end - start;
        return 1;
    }
    return 0;
}

int msg_header_count(const char *msg, size_t len, const char *name)
{
    size_t nlen = strlen(name);
    size_t sect = msg_header_section_len(msg, len);
    size_t pos = 0, start, end;
    int count = 0;

    while (msg_header_field_next(msg, sect, &pos, &start, &end))
        if (msg_header_match(msg, start, end, name, nlen) != 0 && count < INT_MAX) count++;
    return count;
}

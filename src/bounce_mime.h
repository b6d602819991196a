/*
 * bounce_mime - the MIME layer under the feedback parser (bounce.c): header
 * fields, Content-Type parameters, the part tree, and the decoders that turn a
 * part's body into text (base64, quoted-printable, RFC 2047 words, HTML to text).
 *
 * Everything here is pure and bounded: inputs are (pointer, length) spans of the
 * caller's message, which need not be NUL-terminated and may hold NULs; outputs
 * go into caller-sized buffers and are always NUL-terminated.  Nothing allocates.
 * Line ends may be CRLF or bare LF.  The part tree is a flat array in document
 * order with hard caps on nesting depth and part count; a multipart whose close
 * delimiter is missing runs to the end of its parent, and the tree says so.
 */
#ifndef VOLLEY_BOUNCE_MIME_H
#define VOLLEY_BOUNCE_MIME_H

#include <stdbool.h>
#include <stddef.h>

#define BMIME_MAX_DEPTH    8            /* multipart nesting below the top level */
#define BMIME_MAX_PARTS    64           /* entities in one message, the top level included */
#define BMIME_TYPE_MAX     80           /* "type/subtype" */
#define BMIME_BOUNDARY_MAX 128          /* RFC 2046 allows 70 */
#define BMIME_NAME_MAX     64           /* a header field name */
#define BMIME_VALUE_MAX    4096         /* an unfolded header field value */
#define BMIME_HEADER_MAX   (256 * 1024) /* a header section; fields past it are not read */

enum BMIME_CTE {
    BMIME_CTE_IDENTITY, /* 7bit, 8bit, binary, absent or unknown */
    BMIME_CTE_BASE64,
    BMIME_CTE_QP,
};

/* bmime_cte_str - "identity", "base64" or "quoted-printable" */
const char *bmime_cte_str(enum BMIME_CTE c);

/* One entity: its header section and raw (still encoded) body, both spans of the
 * message given to bmime_parse(). */
struct bmime_part {
    const char *hdr;
    size_t hdrlen;
    const char *body;
    size_t bodylen;
    char type[BMIME_TYPE_MAX];         /* lower case; text/plain when absent */
    char boundary[BMIME_BOUNDARY_MAX]; /* multipart only */
    char report_type[32];              /* multipart/report only, lower case */
    enum BMIME_CTE cte;
    int depth;  /* 0 for the message itself */
    int parent; /* index in bmime_msg.part, -1 for the top */
};

struct bmime_msg {
    struct bmime_part part[BMIME_MAX_PARTS];
    int nparts;
    bool truncated; /* a multipart lacked its close delimiter or any boundary */
    bool too_deep;  /* a multipart below BMIME_MAX_DEPTH was left unopened */
    bool too_many;  /* parts past BMIME_MAX_PARTS were dropped */
};

/* bmime_parse - fill m with the part tree of msg[0..len) (m is overwritten) */
void bmime_parse(const char *msg, size_t len, struct bmime_msg *m);

/* bmime_split - split an entity into its header section and body.  The header
 * section ends before the first empty line; an entity whose first line is not a
 * header field has an empty header section.  *hdrlen is at most BMIME_HEADER_MAX
 * (the body still starts after the empty line). */
void bmime_split(const char *p, size_t len, const char **hdr, size_t *hdrlen, const char **body,
                 size_t *bodylen);

/* bmime_header_get - the unfolded value of the first field called name
 * (case-insensitive) in hdr[0..hdrlen), trimmed, into out; 1 if found, else 0 */
int bmime_header_get(const char *hdr, size_t hdrlen, const char *name, char *out, size_t outsz);

/* One field of a header-like block (a header section, or a delivery-status or
 * feedback-report body). */
struct bmime_field {
    char name[BMIME_NAME_MAX];   /* as written */
    char value[BMIME_VALUE_MAX]; /* unfolded, trimmed; may hold 8-bit octets */
};

enum BMIME_FIELD_NEXT {
    BMIME_FIELD_END = 0,   /* no more input */
    BMIME_FIELD_FIELD = 1, /* f holds a field */
    BMIME_FIELD_BLANK = 2, /* an empty line: a group separator */
};

/* bmime_field_next - the next field or blank line of p[0..len) from *pos; lines
 * that are neither (no colon, a stray continuation) are skipped */
enum BMIME_FIELD_NEXT bmime_field_next(const char *p, size_t len, size_t *pos,
                                       struct bmime_field *f);

/* bmime_param - the value of parameter name of a structured header value such
 * as "multipart/report; report-type=delivery-status; boundary=\"x\"", unquoted,
 * into out; 1 if found, else 0 */
int bmime_param(const char *val, const char *name, char *out, size_t outsz);

/* bmime_decode - decode in[0..inlen) per cte into out (NUL-terminated, size
 * outsz >= 1); returns the decoded length (at most outsz - 1, never above inlen) */
size_t bmime_decode(enum BMIME_CTE cte, const char *in, size_t inlen, char *out, size_t outsz);

/* bmime_html_text - the text of an HTML document: tags dropped, <style> and
 * <script> content dropped, block ends as newlines, common entities decoded;
 * into out (NUL-terminated), returns the length */
size_t bmime_html_text(const char *in, size_t inlen, char *out, size_t outsz);

/* bmime_decode_words - in (a NUL-terminated header value) with RFC 2047 encoded
 * words decoded (charset not converted) into out; returns the length */
size_t bmime_decode_words(const char *in, char *out, size_t outsz);

/* bmime_line_next - the next line of p[0..len) from *pos without its line end
 * (LF, CRLF); 1 with *line and *linelen set, 0 at the end */
int bmime_line_next(const char *p, size_t len, size_t *pos, const char **line, size_t *linelen);

/* bmime_ci_find - first case-insensitive occurrence of the C string needle in
 * hay[0..haylen), or NULL */
const char *bmime_ci_find(const char *hay, size_t haylen, const char *needle);

/* bmime_ci_prefix - does s[0..n) start with the C string prefix, ignoring case */
bool bmime_ci_prefix(const char *s, size_t n, const char *prefix);

#endif

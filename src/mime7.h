/*
 * mime7 - downgrade an 8-bit message to 7-bit for a server that does not offer
 * 8BITMIME.  RFC 6152 section 3: such a server must not be sent 8-bit data; the
 * client either converts the message or bounces it.  This module does the
 * conversion, or says why it cannot, so the caller can bounce with a reason.
 *
 * Every leaf body part holding 8-bit octets under Content-Transfer-Encoding
 * 7bit, 8bit or none is re-encoded as quoted-printable (RFC 2045 6.7) and its
 * Content-Transfer-Encoding field replaced or added.  Everything else - every
 * other header byte, multipart delimiters, preambles, parts that needed no
 * change - is copied byte for byte, so a DKIM signature made after conversion
 * stays valid and a 7-bit message comes out identical to its input.
 *
 * Pure and bounded: no I/O, no global state, no allocation besides the caller's
 * vbuf; multipart nesting and part count are capped (MIME7_MAX_DEPTH,
 * MIME7_MAX_PARTS) and the parser does not recurse past the cap.  Line ends may be
 * CRLF or bare LF; lines this module writes end in CRLF.  Fuzzed
 * (tests/fuzz/fuzz_mime7.c).
 */
#ifndef VOLLEY_MIME7_H
#define VOLLEY_MIME7_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util.h"

#define MIME7_MAX_DEPTH    8   /* multipart nesting below the top-level entity */
#define MIME7_MAX_PARTS    256 /* entities opened in one message, the top included */
#define MIME7_BOUNDARY_MAX 200 /* RFC 2046 allows 70; longer is refused */
#define MIME7_QP_LINE      76  /* RFC 2045 6.7 rule 5, the soft "=" included */

/* mime7_needed - does msg[0..len) contain any octet > 127 (header or body)? */
bool mime7_needed(const uint8_t *msg, size_t len);

/*
 * mime7_convert - append to out a 7-bit version of msg[0..len) (header section,
 * empty line, body; not dot-stuffed, that is the transport's job).
 *
 * Leaf parts (the whole body of a non-multipart message; each part of a
 * multipart, recursively) that hold 8-bit octets and have Content-Transfer-
 * Encoding 7bit, 8bit or none become quoted-printable: lines of at most 76
 * octets, soft breaks "=", hard line breaks kept as CRLF, "=" and a line's
 * trailing space or tab encoded.  A part without the field gets it appended to
 * its header section; at the top level "MIME-Version: 1.0" is added as well when
 * absent and the field had to be added.  A multipart labelled 8bit or binary whose
 * content was converted is relabelled 7bit.  Parts already base64 or
 * quoted-printable, and every part with no 8-bit octet, are copied unchanged; a
 * message with no 8-bit octet is copied whole.
 *
 * Returns 0 on success.  Returns -1 with a NUL-terminated reason in why (size
 * whyn; why may be NULL) when the message cannot be made 7-bit this way: 8-bit
 * octets in a header section (that needs SMTPUTF8, not conversion), in a message
 * type part (RFC 2046 5.2.1 forbids encoding it), in a part whose encoding is base64,
 * quoted-printable, binary or unknown, or in a multipart's preamble, delimiters
 * or epilogue; a multipart without a boundary; nesting past MIME7_MAX_DEPTH or
 * more than MIME7_MAX_PARTS parts; output past out's limit.  On -1 out->len is
 * back where it was.  out keeps ownership of its bytes.
 */
int mime7_convert(const uint8_t *msg, size_t len, struct vbuf *out, char *why, size_t whyn);

#endif

/*
 * fl_wire: the only way protocol bytes enter or leave a program.
 *
 * Decoding treats every byte as hostile: the frame size is bounded before
 * protobuf-c sees it, and after decoding every field is validated (version,
 * consortium, ranges, lengths, finiteness, counts that must agree, digests
 * that must match).  A frame that fails any check is rejected with FL_EPROTO
 * and a message saying which field was wrong and why, suitable to send back
 * to the peer in an Error envelope.
 */
#ifndef FL_WIRE_H
#define FL_WIRE_H

#include <stddef.h>
#include <stdint.h>

#include "error/fl_error.h"
#include "nn/fl_model_spec.h"
#include "proto/fl.pb-c.h"

#define FL_PROTO_VERSION 1u
#define FL_WIRE_MAX_FRAME (64u * 1024u * 1024u)  /* bytes in one frame */
#define FL_WIRE_MAX_PARAMS (8u * 1024u * 1024u)  /* floats in one model */
#define FL_WIRE_MAX_NAME 64u                     /* node and consortium names */
#define FL_WIRE_MAX_TEXT 1024u                   /* error and decline texts */
#define FL_WIRE_MAX_LAYERS 16u
#define FL_WIRE_MAX_WIDTH 65536u
#define FL_WIRE_MAX_ROUNDS 1000000u
#define FL_WIRE_MAX_STEPS 1000000u
#define FL_WIRE_MAX_SAMPLES 1000000000ull
#define FL_WIRE_DIGEST_BYTES 32u
#define FL_WIRE_MAX_PARTIES 1024u
#define FL_WIRE_MAX_CLASSES 64u   /* classes in an evaluation (K x K counters) */

/** Decodes one frame and validates it. On success *out owns the envelope;
 *  free it with fl_wire_free. `consortium` is the receiver's consortium id:
 *  an envelope for another consortium is rejected. FL_EPROTO on any fault. */
FL_NODISCARD int fl_wire_decode(Fl__Envelope **out, const uint8_t *buf, size_t len,
                                const char *consortium);

/** Frees a decoded envelope. NULL is a no-op. */
void fl_wire_free(Fl__Envelope *env);

/** Encodes `env` (whose version and consortium the caller has set) into a
 *  fresh malloc'd buffer the caller frees. FL_ENOMEM or FL_ERANGE (frame
 *  over FL_WIRE_MAX_FRAME). */
FL_NODISCARD int fl_wire_encode(const Fl__Envelope *env, uint8_t **buf, size_t *len);

/** Initialises `env` as an empty envelope of this protocol version for
 *  `consortium` (the string is borrowed, not copied). */
void fl_wire_envelope_init(Fl__Envelope *env, const char *consortium);

/** SHA-256 of a parameter vector, over the little-endian bytes of each float:
 *  the model identity that binds updates to the model a round started from. */
void fl_wire_model_digest(const float *params, size_t n, uint8_t out[FL_WIRE_DIGEST_BYTES]);

/** Number of parameters of an MLP with the given layer sizes (weights and
 *  biases), or 0 if the sizes are invalid or the count overflows. */
size_t fl_wire_spec_num_params(const uint32_t *sizes, size_t n);

/** The model of a received ModelSpec: the MLP short form (layer_sizes) or
 *  the general form (input shape and layers), checked with
 *  fl_model_spec_validate.  FL_EPROTO naming the field at fault. */
FL_NODISCARD int fl_wire_spec_decode(const Fl__ModelSpec *sp, fl_model_spec *out);

/** Fills `sp` (initialised here) for sending `spec`: an MLP in the short
 *  form, which every protocol-1 node reads, anything else in the general
 *  form with its layers in `layers` (caller storage, FL_SPEC_MAX_LAYERS
 *  entries) and `ptrs`. The spec is borrowed and must outlive `sp`. */
void fl_wire_spec_encode(const fl_model_spec *spec, Fl__ModelSpec *sp, uint32_t *sizes,
                         Fl__LayerSpec *layers, Fl__LayerSpec **ptrs);

/* Evaluation totals of a model on a node's held-out data travel as
 * FL_WIRE_EVAL_COUNTERS(K) unsigned integers: the K x K confusion counts
 * (row = true class, column = predicted class; K = 2 for a sigmoid output
 * thresholded at 0.5), then the summed loss in units of
 * 1/FL_WIRE_EVAL_LOSS_SCALE nats, then the number of examples. */
#define FL_WIRE_EVAL_LOSS_SCALE 1000.0
#define FL_WIRE_EVAL_COUNTERS(k) ((size_t)(k) * (k) + 2u)

/** Number of classes K of a model's evaluation: its outputs for a softmax,
 *  2 for a sigmoid. */
uint32_t fl_wire_eval_classes(const fl_model_spec *spec);

/** The data-format digest of image data (IDX files) with `d` pixels per
 *  example: what a node joining with images sends as Join.schema_digest,
 *  in place of a CSV schema's digest. (Classes are checked against the
 *  model's outputs when a round starts.) */
void fl_wire_image_digest(size_t d, uint8_t out[FL_WIRE_DIGEST_BYTES]);

/** True if `s` is a valid node or consortium name: 1..64 characters from
 *  [A-Za-z0-9._-]. */
int fl_wire_name_ok(const char *s);

/** The secure-aggregation context of a round: SHA-256 over a domain tag,
 *  the consortium, the round number and attempt, the model's SHA-256 and every public
 *  secagg setting (threshold, neighbours, clip range, max weight, the
 *  participant list in order). Node and coordinator compute it from the same
 *  RoundStart; every secagg signature and encryption is bound to it, so a
 *  message from another round, model or participant set is rejected. */
void fl_wire_secagg_context(const char *consortium, const Fl__RoundStart *rs,
                            uint8_t out[FL_WIRE_DIGEST_BYTES]);

#endif

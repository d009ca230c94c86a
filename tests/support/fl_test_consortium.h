/*
 * fl_test_consortium: the pieces of a test consortium that integration
 * tests share — identities and enrollment, data shards, node configuration
 * files, starting a node. Files go in one scratch directory; the consortium
 * id is "it", the nodes are hospital-1..n.
 */
#ifndef FL_TEST_CONSORTIUM_H
#define FL_TEST_CONSORTIUM_H

#include <sys/types.h>

#include "identity/fl_identity.h"

/** Creates DIR/coordinator.{key,pub} and DIR/hospital-1..n.{key,pub}, and
 *  writes DIR/`file` (enrollment format) listing the first `listed` of the
 *  hospitals. pubs (n entries, may be NULL) receives their public halves. */
void fl_test_consortium_keys(const char *dir, int n, int listed, const char *file,
                             fl_identity_public *pubs);

/** Splits the bundled WDBC data into DIR/data/test.csv and n shards
 *  DIR/data/shard-1..n.csv with `flnode split`. */
void fl_test_consortium_split(const char *dir, int n, const char *flnode,
                              const char *source_dir);

/** Writes DIR/hospital-i.ini (i 1-based): consortium "it" at `endpoint`,
 *  shard i, ledger hospital-i.ledger, the given epsilon cap (delta 1e-5),
 *  `privacy_extra` appended to [privacy] (may be ""), peers file `peers`
 *  for secure aggregation. */
void fl_test_consortium_node_config(const char *dir, int i, const char *endpoint,
                                    double epsilon_max, const char *privacy_extra,
                                    const char *peers, const char *source_dir);

/** Starts flnode for hospital-i with its log in DIR/hospital-i.log. */
pid_t fl_test_consortium_node(const char *dir, int i, const char *flnode);

#endif

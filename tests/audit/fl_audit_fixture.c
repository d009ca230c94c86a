/*
 * fl_audit_fixture: a real privacy ledger for the flaudit tests (see
 * fl_audit_fixture.h).
 */
#include "tests/audit/fl_audit_fixture.h"

#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "identity/fl_identity.h"

int fl_audit_fixture_make(fl_audit_fixture *fx, const char *dir, const char *name, size_t n,
                          unsigned spacing_s)
{
    fl_identity *id = NULL;
    fl_ledger *l = NULL;
    int rc;

    memset(fx, 0, sizeof *fx);
    if (n > FL_AUDIT_FIXTURE_MAX)
        return fl_error_set(FL_EINVAL, "at most %d charges", FL_AUDIT_FIXTURE_MAX);
    snprintf(fx->key, sizeof fx->key, "%s/%s.key", dir, name);
    snprintf(fx->pub, sizeof fx->pub, "%s/%s.pub", dir, name);
    snprintf(fx->ledger, sizeof fx->ledger, "%s/%s.ledger", dir, name);
    if ((rc = fl_identity_generate(&id)) != FL_OK ||
        (rc = fl_identity_save(id, name, fx->key, fx->pub)) != FL_OK ||
        (rc = fl_ledger_open(&l, fx->ledger, id, name, NULL)) != FL_OK)
        goto done;
    for (size_t i = 0; i < n; i++) {
        fl_ledger_charge *c = &fx->charges[i];
        int first_session = i < (n + 1) / 2;
        if (i && spacing_s)
            sleep(spacing_s);
        memset(c, 0, sizeof *c);
        snprintf(c->node, sizeof c->node, "%s", name);
        snprintf(c->consortium, sizeof c->consortium, "demo");
        c->round = (uint32_t)(first_session ? i + 1 : i + 1 - (n + 1) / 2);
        c->accountant = FL_ACCOUNTANT_RDP;
        c->q = 0.05;
        c->sigma = first_session ? 1.4 : 1.8;
        c->clip = first_session ? 1.0 : 0.5;
        c->steps = first_session ? 20 : 30;
        c->dataset_size = first_session ? 569 : 560;
        c->delta = FL_AUDIT_FIXTURE_DELTA;
        c->epsilon_max = FL_AUDIT_FIXTURE_CAP;
        if ((rc = fl_ledger_append_charge(l, c)) != FL_OK)
            goto done;
        fx->n++;
    }
done:
    fl_ledger_free(l);
    fl_identity_free(id);
    return rc;
}

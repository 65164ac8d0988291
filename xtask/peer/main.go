// The bench's plain peer: a Go net/http + pgx service with no cache that answers
// GET /v1/tenants/by-slug/{slug} with one SELECT per request, the tenant's row as JSON. It
// runs against the same database as the registry in the same bench run, so the ratio of
// their miss paths is measured every time (`cargo xtask bench`). Built from Debian's
// packages (golang-go, golang-github-jackc-pgx-v4-dev) with GO111MODULE=off.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"log"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/jackc/pgx/v4"
	"github.com/jackc/pgx/v4/pgxpool"
)

// The pool size of the registry's server, so both have the same database capacity.
const poolConnections = 16

const bySlug = "/v1/tenants/by-slug/"

type tenant struct {
	ID               string     `json:"id"`
	Slug             string     `json:"slug"`
	Name             string     `json:"name"`
	Status           string     `json:"status"`
	Kind             string     `json:"kind"`
	Plan             string     `json:"plan"`
	ErpID            *string    `json:"erp_id"`
	StripeID         *string    `json:"stripe_id"`
	TrialEndsAt      *time.Time `json:"trial_ends_at"`
	ContractStartsOn *string    `json:"contract_starts_on"`
	ContractEndsOn   *string    `json:"contract_ends_on"`
	SalesOwner       *string    `json:"sales_owner"`
	OIDCIssuer       *string    `json:"oidc_issuer"`
	OIDCOrganization *string    `json:"oidc_organization"`
	Version          int64      `json:"version"`
	Products         []string   `json:"products"`
	CreatedAt        time.Time  `json:"created_at"`
	UpdatedAt        time.Time  `json:"updated_at"`
}

func main() {
	config, err := pgxpool.ParseConfig(os.Getenv("DATABASE_URL"))
	if err != nil {
		log.Fatalf("DATABASE_URL: %v", err)
	}
	config.MaxConns = poolConnections
	pool, err := pgxpool.ConnectConfig(context.Background(), config)
	if err != nil {
		log.Fatalf("connecting to the database: %v", err)
	}
	http.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"status":"ok"}`))
	})
	http.HandleFunc(bySlug, func(w http.ResponseWriter, r *http.Request) {
		slug := strings.TrimPrefix(r.URL.Path, bySlug)
		var t tenant
		// The registry's own query (storage::tenants), so both ask the database the same.
		var contactEmail []byte
		err := pool.QueryRow(r.Context(),
			`SELECT t.id::text, t.slug, t.name, t.status::text, t.kind::text, t.plan,
			        t.erp_id, t.stripe_id, t.trial_ends_at, t.contract_starts_on::text,
			        t.contract_ends_on::text, t.sales_owner, t.contact_email_encrypted,
			        t.oidc_issuer, t.oidc_organization, t.version,
			        ARRAY(SELECT p.product FROM tenant_products p
			              WHERE p.tenant_id = t.id AND p.enabled ORDER BY p.product),
			        t.created_at, t.updated_at
			 FROM tenants t WHERE t.slug = $1`, slug).
			Scan(&t.ID, &t.Slug, &t.Name, &t.Status, &t.Kind, &t.Plan, &t.ErpID, &t.StripeID,
				&t.TrialEndsAt, &t.ContractStartsOn, &t.ContractEndsOn, &t.SalesOwner,
				&contactEmail, &t.OIDCIssuer, &t.OIDCOrganization, &t.Version, &t.Products,
				&t.CreatedAt, &t.UpdatedAt)
		if errors.Is(err, pgx.ErrNoRows) {
			http.NotFound(w, r)
			return
		}
		if err != nil {
			http.Error(w, "the database cannot be read", http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(t)
	})
	log.Fatal(http.ListenAndServe(os.Getenv("ADDR"), nil))
}

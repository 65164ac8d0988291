// Drives Retraced's official Node client (@retracedhq/retraced, pinned in package.json)
// against a running registry, the way a product would after changing only its endpoint.
// Run by bins/server/tests/process/retraced_client.rs with REGISTRY_URL and ADMIN_KEY; sets
// its world up through the registry's own API, prints one line per check, exits 1 on the
// first failure. The client checks every answered hash itself (reportEvent and
// reportEvents throw on a mismatch).
"use strict";

const assert = require("node:assert/strict");
const { Client } = require("@retracedhq/retraced");

const base = process.env.REGISTRY_URL;
const admin = process.env.ADMIN_KEY;

async function registry(method, path, body) {
  const response = await fetch(`${base}${path}`, {
    method,
    headers: { Authorization: `Bearer ${admin}`, "Content-Type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  assert.ok(response.ok, `${method} ${path}: ${response.status} ${text}`);
  return JSON.parse(text);
}

async function main() {
  await registry("PUT", "/v1/products/billing", { name: "Billing" });
  const acme = await registry("POST", "/v1/tenants", { slug: "acme", name: "Acme", plan: "free" });
  await registry("POST", "/v1/tenants", { slug: "other", name: "Other", plan: "free" });
  const issued = await registry("POST", "/v1/api-keys", {
    name: "billing audit",
    scopes: ["audit:write", "audit:read"],
    product: "billing",
    expires_at: new Date(Date.now() + 3600 * 1000).toISOString(),
  });
  const client = new Client({
    endpoint: `${base}/auditlog`,
    apiKey: issued.key,
    projectId: "billing",
    component: "invoices",
    version: "1.2.3",
  });

  const tricky = await client.reportEvent({
    action: "invoice:paid",
    crud: "u",
    group: { id: "acme", name: "Acme" },
    actor: { id: "u=1;x", name: "Jörg Ünlü ✓", fields: { role: "a:b=c" } },
    target: { id: "inv%42", name: "Invoice 42", type: "invoice" },
    source_ip: "203.0.113.9",
    description: "Jörg paid 100% of invoice 42",
    is_failure: false,
    fields: { amount: "100%", note: "a:b=c;d", "k:e=y": "日本語 😀", empty: "" },
    external_id: "inv-42:paid%",
    metadata: { "trace=id": "abc;1", region: "eu:west%" },
  });
  console.log(`reportEvent (unicode, : = % in values, external_id, metadata): id ${tricky}`);

  const bare = await client.reportEvent({ action: "invoice.viewed", crud: "r" });
  console.log(`reportEvent (no group, actor, target, fields, ip or external id): id ${bare}`);

  const batch = [];
  for (let n = 1; n <= 5; n++) {
    batch.push({
      action: "invoice.sent",
      crud: "c",
      group: { id: acme.id },
      actor: { id: "u-1", name: "Jane" },
      target: { id: `inv-${n}`, type: "invoice" },
      fields: { n: String(n), "pct%": "50%" },
      created: new Date(Date.UTC(2026, 10, 1, 10, 0, n)),
      is_anonymous: n === 3,
      is_failure: n === 4,
    });
  }
  batch.push({ action: "invoice.sent", crud: "c", group: { id: "other" }, actor: { id: "u-1" } });
  const ids = await client.reportEvents(batch);
  assert.equal(ids.length, 6);
  console.log(`reportEvents: ${ids.length} ids, every hash checked by the client`);

  const mask = {
    id: true,
    action: true,
    crud: true,
    description: true,
    created: true,
    received: true,
    is_failure: true,
    is_anonymous: true,
    group: { id: true, name: true },
    actor: { id: true, name: true, fields: true },
    target: { id: true, type: true, fields: true },
    fields: true,
    external_id: true,
    component: true,
    version: true,
  };
  const structured = {
    action: "invoice.sent",
    crud: "c",
    actor_id: "u-1",
    created_start: new Date(Date.UTC(2026, 10, 1)),
    created_end: new Date(Date.UTC(2026, 10, 2)),
  };
  const connection = await client.query(structured, mask, 2);
  assert.equal(connection.totalCount, 5, "the other tenant's event has another day");
  assert.equal(connection.totalPages(), 3);
  const seen = [];
  for (;;) {
    for (const event of connection.currentResults) {
      seen.push(event.fields.n);
      assert.equal(event.action, "invoice.sent");
      assert.equal(event.component, "invoices");
      assert.ok(event.created instanceof Date);
      assert.equal(event.fields["pct%"], "50%");
      assert.equal(event.group.id, acme.id);
    }
    if (!connection.hasNextPage()) break;
    await connection.nextPage();
  }
  assert.deepEqual(seen, ["5", "4", "3", "2", "1"]);
  console.log(`query with a structured query and a mask, nextPage: ${seen.length} events over ${connection.totalPages()} pages`);

  const masked = await client.query(
    { action: "invoice:paid" },
    { id: true, external_id: true, fields: true, metadata: true },
    10,
  );
  assert.equal(masked.totalCount, 1);
  const paid = masked.currentResults[0];
  assert.equal(paid.id, tricky);
  assert.equal(paid.external_id, "inv-42:paid%");
  assert.equal(paid.fields["k:e=y"], "日本語 😀");
  assert.deepEqual(paid.metadata, [
    { key: "region", value: "eu:west%" },
    { key: "trace=id", value: "abc;1" },
  ]);
  assert.equal(paid.action, undefined, "the mask leaves action out");
  console.log("query masks the fields it was not asked for");

  const token = await client.getViewerToken("acme", "u-1", true);
  assert.match(token, /^trv_[0-9a-f]{64}$/);
  const viewed = await fetch(`${base}/v1/audit/events?limit=200`, {
    headers: { Authorization: `Bearer ${token}` },
  });
  assert.equal(viewed.status, 200);
  const page = await viewed.json();
  assert.equal(page.items.length, 6, "acme's billing events: the tricky one and the five sent");
  assert.ok(page.items.every((item) => item.group.id === acme.id || item.group.id === "acme"));
  assert.ok(page.items.every((item) => item.product === "billing"));
  const write = await fetch(`${base}/v1/audit/events`, {
    method: "POST",
    headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json" },
    body: JSON.stringify({ action: "forged", crud: "c" }),
  });
  assert.equal(write.status, 403);
  console.log(`getViewerToken: reads acme's billing events (${page.items.length}), cannot write`);
}

main().then(
  () => console.log("retraced client: all checks passed"),
  (error) => {
    console.error(`retraced client: FAILED: ${error.stack || error}`);
    process.exit(1);
  },
);

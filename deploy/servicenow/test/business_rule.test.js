// node --test deploy/servicenow/test/
// Checks the business rule against the contract in docs/callback-payload.md.
'use strict';

const test = require('node:test');
const assert = require('node:assert/strict');
const crypto = require('node:crypto');
const fs = require('node:fs');
const path = require('node:path');
const { runRule, sampleIncident } = require('./harness.js');

const SECRET = 'whsec_' + Buffer.from('a-test-secret-for-the-rule-32by!').toString('base64');

/** Standard Webhooks verification, written independently of the harness's signer. */
function verify(secret, headers, body, nowSeconds) {
  const key = Buffer.from(secret.slice('whsec_'.length), 'base64');
  const id = headers['webhook-id'];
  const ts = headers['webhook-timestamp'];
  if (!/^[0-9]+$/.test(ts) || Math.abs(nowSeconds - Number(ts)) > 300) return false;
  const expected = crypto.createHmac('sha256', key).update(id + '.' + ts + '.' + body).digest();
  return headers['webhook-signature'].split(' ').some((entry) => {
    const [version, sig] = entry.split(',');
    const given = Buffer.from(sig || '', 'base64');
    return version === 'v1' && given.length === expected.length &&
      crypto.timingSafeEqual(given, expected);
  });
}

test('sends a signed Standard Webhooks request', () => {
  const nowMs = 1780000000123;
  const result = runRule({ secret: SECRET, nowMs, url: 'https://hooks.example/webhooks/servicenow' });
  assert.equal(result.sent, true);
  assert.deepEqual(result.errors, []);
  assert.equal(result.requests, 1);
  const r = result.request;
  assert.equal(r.method, 'post');
  assert.equal(r.url, 'https://hooks.example/webhooks/servicenow');
  assert.equal(r.timeout_ms, 10000);
  assert.equal(r.headers['Content-Type'], 'application/json');
  assert.equal(r.headers['webhook-id'], '9d385017c611228701d22104cc95c371-4');
  assert.equal(r.headers['webhook-timestamp'], '1780000000');
  assert.match(r.headers['webhook-signature'], /^v1,[A-Za-z0-9+/]+=*$/);
  assert.equal(verify(SECRET, r.headers, r.body, 1780000000), true);
  // Any change to the body breaks the signature.
  assert.equal(verify(SECRET, r.headers, r.body.replace('INC0010001', 'INC0010002'), 1780000000), false);
  const other = 'whsec_' + Buffer.from('not-the-same-secret-at-all-xxxxx').toString('base64');
  assert.equal(verify(other, r.headers, r.body, 1780000000), false);
});

test('the payload is schema 1 with every stored value and no journal field', () => {
  const { request } = runRule({ secret: SECRET, operation: 'insert' });
  const payload = JSON.parse(request.body);
  const incident = sampleIncident();
  assert.deepEqual(Object.keys(payload), ['schema_version', 'instance', 'table', 'operation',
    'sys_id', 'sys_mod_count', 'sys_updated_on', 'sys_updated_by', 'record']);
  assert.equal(payload.schema_version, 1);
  assert.equal(payload.instance, 'dev12345');
  assert.equal(payload.table, 'incident');
  assert.equal(payload.operation, 'insert');
  assert.equal(payload.sys_id, incident.sys_id);
  assert.equal(payload.sys_mod_count, '4');
  assert.equal(payload.sys_updated_on, '2026-05-01 10:00:00');
  assert.equal(payload.sys_updated_by, 'beth.anglin');
  for (const journal of ['work_notes', 'comments', 'comments_and_work_notes', 'u_custom_journal']) {
    assert.equal(journal in payload.record, false, journal);
    delete incident[journal];
  }
  // Every other field, as a string; empty fields as "" (getValue returns null for them).
  assert.deepEqual(payload.record, incident);
  assert.equal(payload.record.assigned_to, '');
});

test('the body is ASCII: non-ASCII text is \\u-escaped and decodes back', () => {
  const { request } = runRule({ secret: SECRET });
  assert.match(request.body, /^[\x20-\x7e]*$/);
  assert.ok(request.body.includes('\\u00e9'));
  assert.ok(request.body.includes('\\ud83d\\ude80'));
  const payload = JSON.parse(request.body);
  assert.equal(payload.record.short_description, sampleIncident().short_description);
  assert.equal(payload.record.description, sampleIncident().description);
});

test('changes made by the integration user send nothing', () => {
  const result = runRule({ secret: SECRET, user: 'nowpilot.integration',
    integrationUser: 'nowpilot.integration' });
  assert.equal(result.sent, false);
  assert.deepEqual(result.errors, []);
  // Anyone else is sent.
  assert.equal(runRule({ secret: SECRET, user: 'beth.anglin' }).sent, true);
});

test('never throws into the transaction', () => {
  for (const options of [
    { secret: '' },
    { secret: 'plain-not-whsec' },
    { secret: 'whsec_' },
    { url: '', secret: SECRET },
    { secret: SECRET, restThrows: true }
  ]) {
    let result;
    assert.doesNotThrow(() => { result = runRule(options); }, JSON.stringify(options));
    assert.equal(result.sent, false, JSON.stringify(options));
    assert.equal(result.errors.length, 1, JSON.stringify(options));
    assert.match(result.errors[0], /^nowpilot: /);
    assert.ok(!result.errors[0].includes(SECRET.slice(6)), 'the secret must not be logged');
  }
});

test('the script is ES5 (Rhino, global scope)', () => {
  const source = fs.readFileSync(path.join(__dirname, '..', 'nowpilot_callback_business_rule.js'), 'utf8');
  const code = source.replace(/\/\*[\s\S]*?\*\//g, '').replace(/\/\/[^\n]*/g, '');
  assert.doesNotMatch(code, /\blet\s|\bconst\s|=>|`|\bclass\s|\.\.\.[A-Za-z_]/);
  // The rule is the standard executeRule wrapper over current/previous.
  assert.match(source, /\(function executeRule\(current, previous[^)]*\) \{/);
  assert.match(source, /\}\)\(current, previous\);\s*$/);
});

test('the CLI prints the request as JSON', () => {
  const { execFileSync } = require('node:child_process');
  const out = execFileSync(process.execPath, [path.join(__dirname, 'harness.js'),
    '--secret', SECRET, '--url', 'http://127.0.0.1:9/webhooks/servicenow', '--now-ms', '1780000000000']);
  const printed = JSON.parse(out.toString());
  assert.equal(printed.sent, true);
  assert.equal(printed.request.url, 'http://127.0.0.1:9/webhooks/servicenow');
  assert.equal(verify(SECRET, printed.request.headers, printed.request.body, 1780000000), true);
});

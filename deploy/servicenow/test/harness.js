#!/usr/bin/env node
// Runs deploy/servicenow/nowpilot_callback_business_rule.js outside ServiceNow, with small
// stand-ins for the platform objects it touches, and reports the HTTP request it would send.
//
// Library:  const { runRule } = require('./harness.js'); runRule({ ... }) -> result
// CLI:      node harness.js [--url URL] [--secret whsec_...] [--user NAME]
//                           [--integration-user NAME] [--operation insert|update]
//                           [--record file.json] [--now-ms N]
//           prints {"sent": bool, "request": {method, url, headers, body, timeout_ms}, "errors": [...]}
//
// No npm dependencies: node:crypto computes the real HMAC, node:vm runs the script in a fresh
// context that has only the ServiceNow globals below (plus JavaScript's built-ins).
'use strict';

const crypto = require('node:crypto');
const fs = require('node:fs');
const path = require('node:path');
const vm = require('node:vm');

const SCRIPT = path.join(__dirname, '..', 'nowpilot_callback_business_rule.js');

/** A realistic incident as stored values (what GlideRecord.getValue returns). */
function sampleIncident() {
  return {
    sys_id: '9d385017c611228701d22104cc95c371',
    number: 'INC0010001',
    state: '2',
    impact: '2',
    urgency: '1',
    priority: '2',
    short_description: 'Caf\u00e9 POS down \u2014 caisse bloqu\u00e9e \u2615 \ud83d\ude80',
    description: 'Line one\nLine two with "quotes" and a tab\there',
    caller_id: '5137153cc611227c000bbd1bd8cd2005',
    assignment_group: '287ebd7da9fe198100f92cc8d1d2154e',
    assigned_to: '',
    cmdb_ci: '109562a3c611227500a7b7ff98cc0dc7',
    category: 'software',
    subcategory: '',
    opened_at: '2026-05-01 09:58:12',
    sys_created_on: '2026-05-01 09:58:12',
    sys_created_by: 'beth.anglin',
    sys_updated_on: '2026-05-01 10:00:00',
    sys_updated_by: 'beth.anglin',
    sys_mod_count: '4',
    active: 'true',
    work_notes: '',
    comments: '',
    comments_and_work_notes: '',
    u_custom_journal: ''
  };
}

const JOURNAL_TYPES = { work_notes: 'journal_input', comments: 'journal_input',
  comments_and_work_notes: 'journal_list', u_custom_journal: 'journal' };

/** Runs the business rule once; returns what it did. */
function runRule(options) {
  const opts = Object.assign({
    url: 'https://nowpilot.example.com/webhooks/servicenow',
    secret: 'whsec_' + Buffer.from('harness-secret-0123456789abcdef!').toString('base64'),
    user: 'beth.anglin',
    integrationUser: 'nowpilot.integration',
    instance: 'dev12345',
    operation: 'update',
    record: sampleIncident(),
    nowMs: Date.now(),
    restThrows: false,
    script: fs.readFileSync(SCRIPT, 'utf8')
  }, options || {});

  const errors = [];
  const sent = [];
  const record = opts.record;
  const properties = {
    instance_name: opts.instance,
    'x_nowpilot.webhook_url': opts.url,
    'x_nowpilot.webhook_secret': opts.secret,
    'x_nowpilot.integration_user': opts.integrationUser
  };

  const current = {
    getFields() {
      const names = Object.keys(record);
      return {
        size: () => names.length,
        get: (i) => ({
          getName: () => names[i],
          getED: () => ({ getInternalType: () => JOURNAL_TYPES[names[i]] || 'string' })
        })
      };
    },
    // Like ServiceNow: null for an empty or unknown field.
    getValue(name) {
      const v = record[name];
      return v === undefined || v === '' ? null : v;
    },
    getUniqueValue: () => record.sys_id,
    getTableName: () => 'incident',
    operation: () => opts.operation
  };

  const gs = {
    getProperty(name, fallback) {
      const v = properties[name];
      return v === undefined || v === null ? (fallback === undefined ? null : fallback) : v;
    },
    getUserName: () => opts.user,
    error: (message) => errors.push(String(message)),
    info: () => {}
  };

  function GlideCertificateEncryption() {}
  GlideCertificateEncryption.prototype.generateMac = function (base64Key, algorithm, data) {
    if (algorithm !== 'HmacSHA256') throw new Error('unsupported algorithm ' + algorithm);
    const key = Buffer.from(base64Key, 'base64');
    return crypto.createHmac('sha256', key).update(String(data), 'utf8').digest('base64');
  };

  function GlideDateTime() {}
  GlideDateTime.prototype.getNumericValue = function () { return opts.nowMs; };

  function RESTMessageV2() {
    if (opts.restThrows) throw new Error('RESTMessageV2 is not available');
    this.request = { method: null, url: null, headers: {}, body: null, timeout_ms: null };
  }
  RESTMessageV2.prototype.setHttpMethod = function (m) { this.request.method = String(m); };
  RESTMessageV2.prototype.setEndpoint = function (u) { this.request.url = String(u); };
  RESTMessageV2.prototype.setRequestHeader = function (n, v) { this.request.headers[n] = String(v); };
  RESTMessageV2.prototype.setRequestBody = function (b) { this.request.body = String(b); };
  RESTMessageV2.prototype.setHttpTimeout = function (ms) { this.request.timeout_ms = ms; };
  RESTMessageV2.prototype.executeAsync = function () { sent.push(this.request); return {}; };
  RESTMessageV2.prototype.execute = function () { throw new Error('the rule must not block: use executeAsync'); };

  const sandbox = {
    current, previous: null, gs, GlideCertificateEncryption, GlideDateTime,
    sn_ws: { RESTMessageV2 }
  };
  vm.runInNewContext(opts.script, sandbox, { filename: 'nowpilot_callback_business_rule.js' });
  return { sent: sent.length > 0, request: sent[0] || null, requests: sent.length, errors };
}

function parseArgs(argv) {
  const opts = {};
  for (let i = 0; i < argv.length; i += 2) {
    const [flag, value] = [argv[i], argv[i + 1]];
    if (value === undefined) throw new Error('missing value for ' + flag);
    switch (flag) {
      case '--url': opts.url = value; break;
      case '--secret': opts.secret = value; break;
      case '--user': opts.user = value; break;
      case '--integration-user': opts.integrationUser = value; break;
      case '--operation': opts.operation = value; break;
      case '--record': opts.record = JSON.parse(fs.readFileSync(value, 'utf8')); break;
      case '--now-ms': opts.nowMs = Number(value); break;
      default: throw new Error('unknown option ' + flag);
    }
  }
  return opts;
}

if (require.main === module) {
  try {
    const result = runRule(parseArgs(process.argv.slice(2)));
    process.stdout.write(JSON.stringify({ sent: result.sent, request: result.request,
      errors: result.errors }) + '\n');
  } catch (e) {
    process.stderr.write('harness: ' + e.message + '\n');
    process.exit(2);
  }
}

module.exports = { runRule, sampleIncident };

/*
 * nowpilot callback: sends every change of an incident to the nowpilot ingress.
 *
 * Business rule settings (docs/servicenow-business-rule.md walks through them):
 *   Table: Incident [incident]   When: async   Insert: checked   Update: checked   Advanced: checked
 *
 * System properties it reads:
 *   x_nowpilot.webhook_url         e.g. https://nowpilot.example.com/webhooks/servicenow
 *   x_nowpilot.webhook_secret      (type password2) whsec_<base64>, the same value as in the
 *                                  ingress configuration (ingress.secrets)
 *   x_nowpilot.integration_user    the user nowpilot writes back as; its own changes are not sent
 *
 * Wire contract (docs/callback-payload.md): a JSON body of schema version 1 with every field of
 * the incident as its stored string value (journal fields left out), every non-ASCII character
 * escaped as \uXXXX so the signed bytes are plain ASCII, and Standard Webhooks headers:
 *   webhook-id        <sys_id>-<sys_mod_count>
 *   webhook-timestamp unix seconds
 *   webhook-signature v1,<base64 HMAC-SHA256 of "<id>.<timestamp>.<body>">
 *
 * ServiceNow does not retry a failed RESTMessageV2 call; nowpilot's poller catches what is lost.
 * This script never throws into the user's transaction: every failure is logged with gs.error.
 * ES5 only (the platform's Rhino engine in global scope): no let/const, arrows or template strings.
 */
(function executeRule(current, previous /* null in async rules */) {
    // Echo suppression first: nowpilot's own updates must not be sent back to it.
    var integrationUser = String(gs.getProperty('x_nowpilot.integration_user', '') || '');
    if (integrationUser !== '' && String(gs.getUserName()) === integrationUser) {
        return;
    }

    // Journal fields read back empty from a GlideRecord and live in sys_journal_field.
    var JOURNAL_FIELDS = { work_notes: true, comments: true, comments_and_work_notes: true };
    var SECRET_PREFIX = 'whsec_';

    function str(value) {
        return (value === null || value === undefined) ? '' : String(value);
    }

    function isJournal(element, name) {
        if (JOURNAL_FIELDS.hasOwnProperty(name)) {
            return true;
        }
        var descriptor = element.getED ? element.getED() : null;
        var type = descriptor ? str(descriptor.getInternalType()) : '';
        return type.indexOf('journal') === 0;
    }

    // Every field's stored value as a string (references as their sys_id, choices as their
    // value, dates in UTC), the way the Table API returns them.
    function recordValues(record) {
        var values = {};
        var fields = record.getFields();
        for (var i = 0; i < fields.size(); i++) {
            var element = fields.get(i);
            var name = str(element.getName());
            if (name === '' || isJournal(element, name)) {
                continue;
            }
            values[name] = str(record.getValue(name));
        }
        return values;
    }

    // JSON with every character outside printable ASCII written as \uXXXX: the signed bytes
    // and the sent bytes are then the same whatever charset the platform uses.
    function asciiJson(value) {
        return JSON.stringify(value).replace(/[\u007f-\uffff]/g, function (c) {
            return '\\u' + ('0000' + c.charCodeAt(0).toString(16)).slice(-4);
        });
    }

    try {
        var url = str(gs.getProperty('x_nowpilot.webhook_url', ''));
        var secret = str(gs.getProperty('x_nowpilot.webhook_secret', ''));
        if (url === '') {
            gs.error('nowpilot: system property x_nowpilot.webhook_url is empty; callback not sent');
            return;
        }
        if (secret.indexOf(SECRET_PREFIX) !== 0 || secret.length <= SECRET_PREFIX.length) {
            gs.error('nowpilot: system property x_nowpilot.webhook_secret must be whsec_<base64>; ' +
                'callback not sent');
            return;
        }

        var sysId = str(current.getUniqueValue());
        var modCount = str(current.getValue('sys_mod_count'));
        var payload = {
            schema_version: 1,
            instance: str(gs.getProperty('instance_name', '')),
            table: str(current.getTableName()),
            operation: str(current.operation()),
            sys_id: sysId,
            sys_mod_count: modCount,
            sys_updated_on: str(current.getValue('sys_updated_on')),
            sys_updated_by: str(current.getValue('sys_updated_by')),
            record: recordValues(current)
        };
        var body = asciiJson(payload);
        var id = sysId + '-' + modCount;
        var timestamp = String(Math.floor(new GlideDateTime().getNumericValue() / 1000));

        // generateMac takes the key already base64-encoded: the part after whsec_ is exactly that.
        var signature = new GlideCertificateEncryption().generateMac(
            secret.substring(SECRET_PREFIX.length), 'HmacSHA256', id + '.' + timestamp + '.' + body);
        if (!signature) {
            gs.error('nowpilot: could not sign the callback for ' + id + '; callback not sent');
            return;
        }

        var request = new sn_ws.RESTMessageV2();
        request.setHttpMethod('post');
        request.setEndpoint(url);
        request.setRequestHeader('Content-Type', 'application/json');
        request.setRequestHeader('webhook-id', id);
        request.setRequestHeader('webhook-timestamp', timestamp);
        request.setRequestHeader('webhook-signature', 'v1,' + signature);
        request.setRequestBody(body);
        request.setHttpTimeout(10000);
        request.executeAsync();
    } catch (e) {
        gs.error('nowpilot: callback not sent: ' + e);
    }
})(current, previous);

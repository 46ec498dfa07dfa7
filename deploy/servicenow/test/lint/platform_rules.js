/*
 * Not a business rule: scripts/check-deploy requires ESLint to REFUSE this file with the
 * ServiceNow-aware rules named below, proving they are active: current.update() in a business
 * rule (no-br-current-update), the deprecated gs.now() (no-gs-now), and a global the platform
 * does not define (no-undef).
 */
(function executeRule(current, previous) {
    var when = gs.now();
    current.update();
    undefinedHelper(when, previous);
})(current, previous);

/*
 * Not a business rule: scripts/check-deploy requires ESLint to REFUSE this file (a lint setup
 * that silently checks nothing must not pass). ES6 syntax does not run on the platform's ES5
 * engine in the global scope.
 */
(function executeRule(current, previous) {
    let number = current.getValue('number');
    gs.error('nowpilot: ' + number + previous);
})(current, previous);

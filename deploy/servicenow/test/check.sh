#!/usr/bin/env bash
# Runs the business-rule tests (Node.js >= 18, no npm packages needed).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
exec node --test "$here/business_rule.test.js"

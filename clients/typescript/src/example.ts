// Product code in TypeScript against the decision service, with types generated from its OpenAPI
// description: a decision, a report of its outcome, and an error read as the project's ErrorBody.
import createClient from "openapi-fetch";
import type { components, paths } from "./closedloop.js";

type ErrorBody = components["schemas"]["ErrorBody"];

const [baseUrl, apiKey] = process.argv.slice(2);
const client = createClient<paths>({ baseUrl, headers: { Authorization: `Bearer ${apiKey}` } });

const decided = await client.POST("/v1/decide", {
  body: {
    use_case: "pick",
    unit_id: "ts-user",
    candidates: [{ id: "a", features: { price: 1 } }, { id: "b", features: { price: 2 } }],
  },
});
if (decided.error || !decided.data) throw new Error(`decide failed: ${JSON.stringify(decided.error)}`);
const decision = decided.data;

const reported = await client.POST("/v1/feedback", {
  body: { decision_id: decision.decision_id, outcomes: { click: 1 } },
});

const refused = await client.POST("/v1/decide", {
  body: { use_case: "pick", unit_id: "ts-user", candidates: [{ id: "a", features: { price: "cheap" } }] },
});
const error: ErrorBody | undefined = refused.error as ErrorBody | undefined;

console.log(
  JSON.stringify({
    choice: decision.choice,
    propensity: decision.propensity,
    feedback: reported.data?.status,
    error_status: refused.response.status,
    error_field: error?.error.field,
  }),
);

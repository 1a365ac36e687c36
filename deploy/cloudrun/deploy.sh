#!/bin/sh
# Builds the authmesh relay image with Cloud Build and deploys it to Cloud Run.
#   PROJECT_ID=my-project deploy/cloudrun/deploy.sh
# Optional: REGION (us-central1), SERVICE (authmesh-relay), REPOSITORY (authmesh),
# MAX_INSTANCES (3). DRY_RUN=1 prints the gcloud commands instead of running them.
#
# Several instances sharing a Memorystore for Redis instance (see README.md), one of
#   REDIS_URL=redis://10.0.0.3:6379/0       the instance's private address (no AUTH)
#   REDIS_URL_SECRET=authmesh-redis-url     a Secret Manager secret holding the URL with AUTH
# and a way into the VPC, one of
#   VPC_CONNECTOR=name                      a Serverless VPC Access connector
#   NETWORK=name [SUBNET=name]              Direct VPC egress (SUBNET defaults to NETWORK)
set -eu

: "${PROJECT_ID:?set PROJECT_ID to your Google Cloud project id}"
REGION=${REGION:-us-central1}
SERVICE=${SERVICE:-authmesh-relay}
REPOSITORY=${REPOSITORY:-authmesh}
MAX_INSTANCES=${MAX_INSTANCES:-3}
IMAGE="$REGION-docker.pkg.dev/$PROJECT_ID/$REPOSITORY/$SERVICE"

# Cloud Run's front end puts the client address last in X-Forwarded-For, so AMESH_TRUST_PROXY=1
# gives the relay the real client. The script takes no arguments, so "$@" collects the deploy
# flags that depend on the mode (checked here, before anything is built).
if [ -z "${REDIS_URL:-}${REDIS_URL_SECRET:-}" ]; then
    # State in memory: --session-affinity keeps one client on one instance.
    set -- --session-affinity --set-env-vars AMESH_TRUST_PROXY=1
else
    if [ -n "${REDIS_URL:-}" ] && [ -n "${REDIS_URL_SECRET:-}" ]; then
        echo "deploy.sh: set REDIS_URL or REDIS_URL_SECRET, not both." >&2
        exit 2
    fi
    # Memorystore has only a private address: traffic to private ranges goes through the VPC.
    if [ -n "${VPC_CONNECTOR:-}" ]; then
        set -- --vpc-connector "$VPC_CONNECTOR" --vpc-egress private-ranges-only
    elif [ -n "${NETWORK:-}" ]; then
        set -- --network "$NETWORK" --subnet "${SUBNET:-$NETWORK}" --vpc-egress private-ranges-only
    else
        echo "deploy.sh: Memorystore is reachable only from your VPC; set VPC_CONNECTOR" \
            "(Serverless VPC Access) or NETWORK and SUBNET (Direct VPC egress)." >&2
        exit 2
    fi
    # The instances forward a pairing to the one that owns its code, so no affinity is
    # needed. CPU stays allocated between requests so that every instance keeps its Redis
    # heartbeat and its forwarding subscription alive.
    set -- "$@" --no-session-affinity --no-cpu-throttling
    if [ -n "${REDIS_URL:-}" ]; then
        set -- "$@" --set-env-vars "AMESH_TRUST_PROXY=1,AMESH_REDIS_URL=$REDIS_URL"
    else
        set -- "$@" --set-env-vars AMESH_TRUST_PROXY=1 \
            --set-secrets "AMESH_REDIS_URL=$REDIS_URL_SECRET:latest"
    fi
fi

run() {
    if [ -n "${DRY_RUN:-}" ]; then
        echo "$*"
    else
        "$@"
    fi
}

# Run from the repository root: the build context is the whole checkout (.dockerignore trims it).
cd "$(dirname "$0")/../.."

if [ -z "${DRY_RUN:-}" ] &&
    ! gcloud artifacts repositories describe "$REPOSITORY" --project "$PROJECT_ID" \
        --location "$REGION" >/dev/null 2>&1; then
    gcloud artifacts repositories create "$REPOSITORY" --project "$PROJECT_ID" \
        --location "$REGION" --repository-format docker
fi

run gcloud builds submit --project "$PROJECT_ID" --region "$REGION" \
    --config deploy/cloudrun/cloudbuild.yaml --substitutions "_IMAGE=$IMAGE" .

# Cloud Run sets PORT itself from --port. --concurrency 1000 lets one instance carry all WebSockets
# so a second instance starts only under real load; --timeout 3600 is the longest a WebSocket may
# stay open on Cloud Run.
run gcloud run deploy "$SERVICE" --project "$PROJECT_ID" --region "$REGION" \
    --image "$IMAGE" \
    --port 3001 \
    --allow-unauthenticated \
    --min-instances 0 \
    --max-instances "$MAX_INSTANCES" \
    --concurrency 1000 \
    --timeout 3600 \
    "$@"

run gcloud run services describe "$SERVICE" --project "$PROJECT_ID" --region "$REGION" \
    --format "value(status.url)"

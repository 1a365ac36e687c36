#!/bin/sh
# Builds the authmesh relay image with Cloud Build and deploys it to Cloud Run.
#   PROJECT_ID=my-project deploy/cloudrun/deploy.sh
# Optional: REGION (us-central1), SERVICE (authmesh-relay), REPOSITORY (authmesh),
# MAX_INSTANCES (3). DRY_RUN=1 prints the gcloud commands instead of running them.
set -eu

: "${PROJECT_ID:?set PROJECT_ID to your Google Cloud project id}"
REGION=${REGION:-us-central1}
SERVICE=${SERVICE:-authmesh-relay}
REPOSITORY=${REPOSITORY:-authmesh}
MAX_INSTANCES=${MAX_INSTANCES:-3}
IMAGE="$REGION-docker.pkg.dev/$PROJECT_ID/$REPOSITORY/$SERVICE"

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

# --session-affinity keeps one client on one instance. Cloud Run's front end puts the client
# address last in X-Forwarded-For, so AMESH_TRUST_PROXY=1 gives the relay the real client.
# Cloud Run sets PORT itself from --port. --concurrency 1000 lets one instance carry all WebSockets
# so a second instance starts only under real load; --timeout 3600 is the longest a WebSocket may
# stay open on Cloud Run.
run gcloud run deploy "$SERVICE" --project "$PROJECT_ID" --region "$REGION" \
    --image "$IMAGE" \
    --port 3001 \
    --allow-unauthenticated \
    --session-affinity \
    --min-instances 0 \
    --max-instances "$MAX_INSTANCES" \
    --concurrency 1000 \
    --timeout 3600 \
    --set-env-vars AMESH_TRUST_PROXY=1

run gcloud run services describe "$SERVICE" --project "$PROJECT_ID" --region "$REGION" \
    --format "value(status.url)"

#!/usr/bin/env bash
# Builds LabLink's images, tagged with the version in package.json, and pushes them when asked:
#   <registry>/lablink-server:<version>    the web app, worker and migrations (Dockerfile)
#   <registry>/lablink-agent:<version>     the VM agent (agent/packaging/Dockerfile): the server's
#                                          LABLINK_AGENT_IMAGE, Terraform's agent_image
#   <registry>/lablink-research:<version>  the research container with CUDA
#                                          (agent/packaging/research.Dockerfile): a fleet's image
#
#   scripts/build-images.sh <registry> [--push]
#   e.g. scripts/build-images.sh 123456789012.dkr.ecr.us-east-1.amazonaws.com/lablink --push
# `--no-agent-build` reuses agent/dist/lablink-agent.mjs as it is (tests).
set -euo pipefail

cd "$(dirname "$0")/.."

registry="" push=0 agent_build=1
for arg in "$@"; do
  case $arg in
    --push) push=1 ;;
    --no-agent-build) agent_build=0 ;;
    -h | --help)
      sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'
      exit 0
      ;;
    -*)
      echo "build-images: unknown option $arg" >&2
      exit 2
      ;;
    *)
      if [[ -n $registry ]]; then
        echo "build-images: one registry, please (got $registry and $arg)" >&2
        exit 2
      fi
      registry=${arg%/}
      ;;
  esac
done
if [[ -z $registry ]]; then
  echo "usage: scripts/build-images.sh <registry> [--push]   (e.g. ghcr.io/your-lab)" >&2
  exit 2
fi

version=$(node -p 'require("./package.json").version')
server="$registry/lablink-server:$version"
agent="$registry/lablink-agent:$version"
research="$registry/lablink-research:$version"

# The agent image carries the single-file bundle, built from this checkout.
if ((agent_build)); then npm run --silent build -w agent > /dev/null; fi
if [[ ! -s agent/dist/lablink-agent.mjs ]]; then
  echo "build-images: agent/dist/lablink-agent.mjs is missing (npm run build -w agent)" >&2
  exit 1
fi

docker build -f Dockerfile -t "$server" .
docker build -f agent/packaging/Dockerfile -t "$agent" .
docker build -f agent/packaging/research.Dockerfile -t "$research" agent/packaging

if ((push)); then
  for image in "$server" "$agent" "$research"; do docker push "$image"; done
fi

echo "built: $server $agent $research"
echo "LABLINK_AGENT_IMAGE=$agent"

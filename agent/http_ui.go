package agent

import (
	"net/http"

	"github.com/pgbattery/pgbattery/agent/ui"
)

// uiPath is where the agent serves its web UI; GET / redirects there.
const uiPath = "/ui/"

// uiEndpoint serves the web UI's embedded files through the route table,
// so they get its method checks; the files set their own content type and
// caching headers.
func uiEndpoint() endpoint {
	files := ui.Handler(uiPath)
	return func(w http.ResponseWriter, r *http.Request) (any, error) {
		files.ServeHTTP(w, r)
		return nil, errAlreadyWritten
	}
}

import Foundation

extension TidingsConfiguration {
    /// Checks the JWKS URLs, the leeway and the claim paths.
    func validateTokenRules() throws(ConfigurationError) {
        for url in jwksURLs {
            guard let parsed = URL(string: url), ["http", "https"].contains(parsed.scheme?.lowercased()), parsed.host?.isEmpty == false else {
                throw ConfigurationError("--jwks-url must be an http:// or https:// URL, not \(url)")
            }
        }
        if jwksRefresh <= .zero { throw ConfigurationError("--jwks-refresh must be positive") }
        if jwtLeeway < .zero { throw ConfigurationError("--jwt-leeway must not be negative") }
        for (flag, path) in [("--jwt-subject-claim", jwtSubjectClaim), ("--jwt-topics-claim", jwtTopicsClaim), ("--jwt-publish-claim", jwtPublishClaim)] {
            if path.isEmpty || path.hasPrefix(".") || path.hasSuffix(".") || path.contains("..") {
                throw ConfigurationError("\(flag) must be a claim name or a dotted path such as realm_access.roles, not \"\(path)\"")
            }
        }
    }
}

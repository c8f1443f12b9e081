package http

func (s *Server) agentRoutes() {}

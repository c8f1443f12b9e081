package http

func (s *Server) environmentRoutes() {}
